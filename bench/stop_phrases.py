"""Which stop phrases to ship: false alarms of candidate phrases on speech that does not contain them.

For each language, each candidate phrase gets its own spotter (the shipped KWS model, default score and
threshold, one keyword) and is run over
- the shared real speech clips (../shared/assets/audio/<lang> and, for Chinese, the KWS model's test_wavs),
- the assistant's own kind of speech: espeak-ng reading --replies answers of the shared instruction data
  (English: OpenBookQA questions; Chinese: alpaca_zh_demo outputs), none of which contains a candidate,
and every detection is a false alarm. As a sanity check that a candidate can fire at all, espeak-ng says it
alone between silences (`heard`: detections of 1). A candidate that espeak cannot make fire is not ruled out
(espeak is not a person) but is marked.

With --barge-in K each phrase is also counted by the barge-in spotter the daemon runs while a reply is live
(K staggered streams, num_trailing_blanks --trailing-blanks; wake/spotter.py BargeInSpotter) on the same audio,
beside the plain spotter as the baseline; --phrases limits the run to some candidates (e.g. the defaults).

    .venv/bin/python -m bench.stop_phrases [--replies 30] [--lang en] [--phrases STOP "NEVER MIND"]
        [--barge-in 2 --trailing-blanks 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "assets"
AUDIO = SHARED / "audio"
KWS = {"en": SHARED / "kws" / "en-gigaspeech-3.3M-mobile", "zh": SHARED / "kws" / "zh-wenetspeech-3.3M-mobile"}
CANDIDATES = {
    "en": ["STOP", "STOP IT", "STOP TALKING", "BE QUIET", "SHUT UP", "CANCEL", "NEVER MIND", "THAT'S ENOUGH",
           "OKAY STOP", "QUIET PLEASE"],
    "zh": ["停", "停下", "停止", "停一下", "别说了", "安静", "闭嘴", "好了", "取消", "不要说了"],
}
ESPEAK_VOICE = {"en": "en-us", "zh": "cmn"}
RATE = 16000


def load(path: Path) -> np.ndarray:
    from assistant.audio.resample import resample, to_mono

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(to_mono(data), rate, RATE).astype(np.float32)


def espeak(text: str, lang: str) -> np.ndarray:
    out = subprocess.run(["espeak-ng", "-v", ESPEAK_VOICE[lang], "--stdout"], input=text.encode(),
                         capture_output=True, check=True, timeout=60).stdout
    import io

    from assistant.audio.resample import resample

    data, rate = sf.read(io.BytesIO(out), dtype="float32", always_2d=True)
    return resample(data[:, 0], rate, RATE).astype(np.float32)


def replies(lang: str, count: int) -> list[str]:
    if lang == "en":
        rows = (json.loads(line) for line in (SHARED / "datasets/arc-openbookqa/openbook_qa.jsonl").open())
        return [r["query"] + " " + r["choices"][r["gold"]] + "." for r, _ in zip(rows, range(count), strict=False)]
    rows = json.loads((SHARED / "datasets/llamafactory-demo/alpaca_zh_demo.json").read_text())
    return [r["output"][:120] for r in rows[:count]]


def spotter(lang: str, phrase: str):
    from assistant.models.files import find_transducer
    from assistant.wake.keywords import load_tokens, parse_keywords
    from assistant.wake.spotter import WakeWord

    files = find_transducer(KWS[lang], "")
    keywords = parse_keywords(phrase, load_tokens(files.tokens, files.bpe_model), source=phrase)
    return WakeWord(files, keywords)


def count(wake, audio: np.ndarray) -> int:
    from assistant.audio.chunk import AudioChunk

    wake.reset(0.0)
    hits = 0
    for i in range(0, len(audio), 1600):
        hits += wake.spot(AudioChunk(audio[i : i + 1600], i / RATE)) is not None
    hits += wake.flush() is not None
    return hits


def measure(lang: str, replies_n: int, phrases: list[str] | None = None, barge_in: int = 0,
            trailing_blanks: int = 0) -> list[dict]:
    from assistant.wake.spotter import barge_in_spotter

    clips = sorted((AUDIO / lang).glob("*.*"))
    if lang == "zh":
        clips += sorted((KWS["zh"] / "test_wavs").glob("*.wav"))
    real = np.concatenate([np.concatenate([load(p), np.zeros(RATE // 2, np.float32)]) for p in clips])
    # Texts that contain a candidate (English "stop" is a common word) are left out for all candidates.
    patterns = [re.compile(rf"(?<![a-z']){re.escape(c.lower())}(?![a-z'])") for c in CANDIDATES[lang]]
    texts = [t for t in replies(lang, 2 * replies_n) if not any(p.search(t.lower()) for p in patterns)][:replies_n]
    own = np.concatenate([np.concatenate([espeak(t, lang), np.zeros(RATE // 2, np.float32)]) for t in texts])
    rows = []
    for phrase in CANDIDATES[lang]:
        if phrases and phrase not in phrases:
            continue
        started = time.perf_counter()
        wake = spotter(lang, phrase)
        said = np.concatenate([np.zeros(RATE, np.float32), espeak(phrase, lang), np.zeros(RATE, np.float32)])
        rows.append({
            "lang": lang, "phrase": phrase,
            "false_real": count(wake, real), "real_min": len(real) / RATE / 60,
            "false_own": count(wake, own), "own_min": len(own) / RATE / 60,
            "heard": count(wake, said),
        })
        if barge_in:
            fast = barge_in_spotter(wake, barge_in, trailing_blanks)
            rows[-1].update(barge_in=f"{barge_in} streams, {trailing_blanks} trailing blanks",
                            false_real_bi=count(fast, real), false_own_bi=count(fast, own),
                            heard_bi=count(fast, said))
        print(f"{lang} {phrase}: {rows[-1]} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--lang", choices=["en", "zh"], action="append")
    parser.add_argument("--phrases", nargs="+", help="only these candidates")
    parser.add_argument("--barge-in", type=int, default=0, help="also count with K staggered streams")
    parser.add_argument("--trailing-blanks", type=int, default=0, help="their num_trailing_blanks")
    args = parser.parse_args()
    rows = [row for lang in args.lang or ["en", "zh"]
            for row in measure(lang, args.replies, args.phrases, args.barge_in, args.trailing_blanks)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"{'lang':4} {'phrase':16} {'false/real speech':>18} {'false/own speech':>17} {'heard (espeak)':>14}")
    for r in rows:
        print(f"{r['lang']:4} {r['phrase']:16} {r['false_real']:5d} in {r['real_min']:4.1f} min "
              f"{r['false_own']:5d} in {r['own_min']:4.1f} min {r['heard']:14d}")
        if "barge_in" in r:
            print(f"{'':4} {'  barge-in':16} {r['false_real_bi']:5d} {'':7} {r['false_own_bi']:5d} {'':7} "
                  f"{r['heard_bi']:14d}   ({r['barge_in']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
