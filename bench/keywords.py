"""Wake-word tuning: recall and false alarms per hour, default settings against tuned ones, per language.

Tuned from synthetic positives (espeak-ng, the `assistant keywords tune` default) and evaluated only on real
recordings never used for tuning: the shared clips in which each phrase is said (recall) and the shared clips in
which it is not (false alarms per hour). The baseline is the same keywords file as written, in the same run.

    python -m bench.keywords [--language en|zh|both] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from assistant.models.files import find_transducer
from assistant.wake import samples, tuning
from assistant.wake.keywords import load_tokens, parse_keywords
from bench.cpu import describe_cpu

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve() / "assets"
AUDIO = ASSETS / "audio"
ZH_WAVS = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile" / "test_wavs"

# phrase -> the shared recordings in which it is said (from audio/transcripts.tsv)
CASES = {
    "en": {
        "model": ASSETS / "kws" / "en-gigaspeech-3.3M-mobile",
        "phrases": {
            "FELLOW AMERICANS": ["en/whisper-jfk.flac"],
            "COUNTRY": ["en/whisper-jfk.flac"],
            "SORROW": ["en/wenet-librispeech-1995-1837-0001.wav"],
            "COTTON": ["en/wenet-librispeech-1995-1837-0001.wav"],
            "GOSPEL": ["en/picovoice-leopard-test.wav"],
            "NARRATIVE": ["en/lhotse-librispeech-2412-153948-0000.flac"],
        },
        "clips": sorted(p.relative_to(AUDIO).as_posix() for p in (AUDIO / "en").glob("*") if p.is_file()),
    },
    "zh": {
        "model": ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile",
        "phrases": {
            "文森特卡索": ["kws:3.wav"], "法国": ["kws:3.wav"], "蒋友伯": ["kws:4.wav"], "女儿": ["kws:4.wav"],
            "周望军": ["kws:5.wav"], "落实": ["kws:5.wav"], "朱丽楠": ["kws:6.wav"], "见面会": ["kws:6.wav"],
            "豪猪": ["zh/porcupine-haozhu.wav"], "广州市": ["zh/wenet-aishell-BAC009S0724W0121.wav"],
            "欢迎大家": ["zh/funasr-asr_example.wav"],
        },
        "clips": [f"kws:{i}.wav" for i in range(7)] + sorted(
            p.relative_to(AUDIO).as_posix() for p in (AUDIO / "zh").glob("*") if p.is_file()
        ),
    },
}


def _path(name: str) -> Path:
    return ZH_WAVS / name[4:] if name.startswith("kws:") else AUDIO / name


def evaluate(model: Path, keywords_text: str, clips: list[tuning.Clip], said: dict[str, list[str]],
             threads: int) -> tuple[int, int, int, float]:
    """(found, positives, false alarms, hours of audio without that phrase), summed over the phrases."""
    files = find_transducer(model, "kws")
    keywords = parse_keywords(keywords_text, load_tokens(files.tokens, files.bpe_model))
    scanner = tuning.Scanner(files, keywords)
    hits = tuning.scan_all(scanner, clips, [tuning.AS_WRITTEN], workers=threads)[tuning.AS_WRITTEN]
    found = positives = false = 0
    hours = 0.0
    for phrase, where in said.items():
        label = "_".join(phrase.split())
        fired = {h.clip for h in hits if h.label in (phrase, label)}
        positives += len(where)
        found += sum(1 for name in where if name in fired)
        false += sum(1 for h in hits if h.label in (phrase, label) and h.clip not in where)
        hours += sum(c.seconds for c in clips if c.name not in where) / 3600
    return found, positives, false, hours


def run_language(language: str, threads: int) -> dict:
    case = CASES[language]
    clips = [tuning.Clip(name, samples.read_clip(_path(name)).samples) for name in case["clips"]]
    written = "".join(f"{phrase}\n" for phrase in case["phrases"])
    with tempfile.TemporaryDirectory() as work:
        source, tuned = Path(work) / "keywords.txt", Path(work) / "tuned.txt"
        source.write_text(written, encoding="utf-8")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "assistant", "keywords", "tune", str(source), "--kws-model",
               str(case["model"]), "--out", str(tuned), "--threads", str(threads), "--language", language]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        tune_s = time.monotonic() - started
        tuned_text = tuned.read_text(encoding="utf-8")
    default = evaluate(case["model"], written, clips, case["phrases"], threads)
    after = evaluate(case["model"], tuned_text, clips, case["phrases"], threads)
    return {"language": language, "keywords": len(case["phrases"]), "default": default, "tuned": after,
            "tune_s": tune_s, "tuned_text": tuned_text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", choices=["en", "zh", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    languages = ["en", "zh"] if args.language == "both" else [args.language]
    print(describe_cpu())
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| language | keywords | settings | recall on real clips | false alarms | per hour | tuning time |")
    print("|---|---|---|---|---|---|---|")
    for language in languages:
        r = run_language(language, args.threads)
        for name in ("default", "tuned"):
            found, positives, false, hours = r[name]
            setting = "as written" if name == "default" else "tuned (synthetic positives)"
            when = "-" if name == "default" else f"{r['tune_s']:.0f} s"
            print(f"| {language} | {r['keywords']} | {setting} | {found}/{positives} | {false} | "
                  f"{false / hours:.1f} | {when} |")
        print("\n" + "\n".join("    " + line for line in r["tuned_text"].splitlines()) + "\n", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
