"""Where the ASR starts after a wake word: the keyword's real end (sherpa-onnx token times) against the old
estimate (detection time - DETECTION_LATENCY_S), scored by words lost or gained at the start of the transcript.

Each English utterance clip of the shared assets (and the rest of the JFK clip) is said straight after the wake
phrase "And so, my fellow Americans," (the start of the JFK clip), with a pause of --pause seconds (0: no pause
at all, the hard case). The wake word runs as the daemon runs it (gated, 100 ms chunks), the recognizer (the
KWS model as a streaming ASR, as the tests use it) is fed from `t_end - asr.pre_roll_s` to the end of the
utterance. Against the clip's transcript: `lost` = reference words missing before the first word heard,
`gained` = words heard before the first reference word (usually the keyword's tail).

    .venv/bin/python -m bench.keyword_timing [--pause 0 --pause 0.3] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from speechdata.assets import AUDIO, KWS_EN, UTTERANCE_CLIPS
from speechdata.audio import jfk_question, load_clip, silence, wake_phrase

REPO = Path(__file__).resolve().parents[1]

PRE_ROLL_S = 0.0  # the ASR from t_end itself (the daemon adds asr.pre_roll_s = 0.3 s; --pre-roll)
KEYWORD_END_S = 2.15


def words(text: str) -> list[str]:
    return "".join(ch if ch.isalnum() or ch == "'" else " " for ch in text.upper()).split()


def references() -> dict[str, str]:
    rows = csv.DictReader((AUDIO / "transcripts.tsv").open(encoding="utf-8"), delimiter="\t")
    return {row["file"]: row["transcript"] for row in rows}


def start_errors(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(reference words lost before the first aligned word, hypothesis words before it), aligned on the first
    word of the hypothesis that matches one of the reference's first 4 words (else lost = gained = 0 if equal
    heads, else all counted against the first 4)."""
    for j, word in enumerate(hyp[:4]):
        for i, ref_word in enumerate(ref[:4]):
            if word == ref_word:
                return i, j
    return min(4, len(ref)), min(4, len(hyp))


def run(pause: float) -> list[dict]:
    from assistant.asr.streaming import StreamingASR
    from assistant.audio.chunk import AudioChunk
    from assistant.models.files import find_transducer
    from assistant.settings import GateSettings
    from assistant.wake.gate import gated
    from assistant.wake.keywords import load_tokens, parse_keywords
    from assistant.wake.spotter import WakeWord

    files = find_transducer(KWS_EN, "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    wake = gated(WakeWord(files, parse_keywords("FELLOW AMERICANS", table)), GateSettings())
    asr = StreamingASR(files)
    refs = references()
    cases = [("en/whisper-jfk.flac (rest)", jfk_question(), "ask not what your country can do for you")]
    for path in UTTERANCE_CLIPS:
        cases.append((f"en/{path.name}", load_clip(path), refs[f"en/{path.name}"]))
    rows = []
    for name, utterance, ref in cases:
        # "... fellow Americans" ends at ~2.15 s of the JFK clip (the energy drops): cut there, so --pause is
        # the real pause between the keyword and the utterance.
        head = wake_phrase()[: int(KEYWORD_END_S * 16000)]
        audio = np.concatenate([silence(0.5), head, silence(pause), utterance, silence(1.5)])
        wake.reset()
        detection = None
        for i in range(0, len(audio), 1600):
            detection = wake.accept(AudioChunk(audio[i : i + 1600], i / 16000)) or detection
            if detection is not None:
                break
        if detection is None:
            rows.append({"clip": name, "pause": pause, "detected": False})
            continue
        estimate = max(0.0, detection.t - wake.wake.latency_s)
        row = {"clip": name, "pause": pause, "detected": True, "said_end": (0.5 + len(head) / 16000),
               "t": detection.t, "timed_end": detection.t_end if detection.timed else None, "estimate": estimate}
        for key, t_end in (("timed", row["timed_end"]), ("estimate", estimate)):
            if t_end is None:
                continue
            asr.start()
            start = int(max(0.0, t_end - PRE_ROLL_S) * 16000)
            asr.accept(audio[start:])
            text = asr.finish()
            lost, gained = start_errors(words(ref), words(text))
            row[f"{key}_lost"], row[f"{key}_gained"], row[f"{key}_text"] = lost, gained, text[:60]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pause", type=float, action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [row for pause in args.pause or [0.0, 0.3] for row in run(pause)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'clip':44} {'pause':>5} {'said end':>8} {'det t':>6} {'timed end':>9} {'estim.':>6} "
          f"{'timed lost/gained':>17} {'estimate lost/gained':>20}")
    totals = {"timed": [0, 0], "estimate": [0, 0]}
    for r in rows:
        if not r["detected"]:
            print(f"{r['clip']:44} {r['pause']:5.1f} not detected")
            continue
        for key in totals:
            if f"{key}_lost" in r:
                totals[key][0] += r[f"{key}_lost"]
                totals[key][1] += r[f"{key}_gained"]
        timed = f"{r['timed_end']:9.2f}" if r["timed_end"] is not None else f"{'-':>9}"
        print(f"{r['clip']:44} {r['pause']:5.1f} {r['said_end']:8.2f} {r['t']:6.2f} {timed} {r['estimate']:6.2f} "
              f"{r.get('timed_lost', '-')!s:>8}/{r.get('timed_gained', '-')!s:<8} "
              f"{r.get('estimate_lost', '-')!s:>10}/{r.get('estimate_gained', '-')!s:<9}")
    print(f"total words lost/gained at the start: timed {totals['timed'][0]}/{totals['timed'][1]}, "
          f"estimate {totals['estimate'][0]}/{totals['estimate'][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
