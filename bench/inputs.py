"""Cost of hostile input: keyword expansion on the worst lines, bad WAV headers, odd resampling ratios, configs.

Issue 15 found inputs that cost minutes or gigabytes: the keyword line '小米A' * 23 took 34 s and then ran out
of memory (every pronunciation combination was built before the first 16 were kept); a WAV header saying
0x7fffffff Hz asked the resampler for 539 GiB of filter weights; an alias bomb made a 351 MB error line. The
old code is gone, so each figure here is printed beside a normal input measured in the same run (the baseline)
and the old figure is quoted from the issue.

    .venv/bin/python -m bench.inputs [--runs 20]

Needs the shared KWS token tables (../shared/assets/kws). Prints one table per input class; times are the
median of --runs calls, after one warm-up call.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from assistant.audio.resample import Resampler
from assistant.audio.sources import open_source
from assistant.errors import AssistantError
from assistant.settings import load_settings
from assistant.wake.keywords import MAX_KEYWORD_LINES, load_tokens, parse_keywords
from bench.cpu import describe_cpu

REPO = Path(__file__).resolve().parents[1]

SHARED = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared"))
KWS = SHARED / "assets" / "kws"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, str]:
    """(median seconds, outcome) of fn(); the outcome is its result's size or the error it raised."""

    def outcome() -> str:
        try:
            result = fn()
        except AssistantError as exc:
            text = str(exc)
            return "refused: " + text[text.rfind(": ") + 2 :].split(" (")[0][:50]
        return f"{len(result)} variants" if isinstance(result, list) else "ok"

    first = outcome()  # warm-up (imports pypinyin's dictionary, fills caches)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        outcome()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def keyword_rows(runs: int) -> list[tuple[str, str, float, str, str]]:
    zh = load_tokens(KWS / "zh-wenetspeech-3.3M-mobile" / "tokens.txt")
    en = load_tokens(KWS / "en-gigaspeech-3.3M-mobile" / "tokens.txt")
    examples = (REPO / "examples" / "keywords-zh.txt").read_text(encoding="utf-8")
    worst_file = "\n".join(["小米A" * 23] * MAX_KEYWORD_LINES)
    cases = [
        ("baseline: 小爱同学", zh, "小爱同学", "-"),
        ("baseline: HEY COMPUTER", en, "HEY COMPUTER", "-"),
        ("baseline: examples/keywords-zh.txt", zh, examples, "-"),
        ("'小米A' * 23 (issue 15)", zh, "小米A" * 23, "34 s, then out of memory"),
        ("'小米' * 32 (2^63 sandhi readings)", zh, "小米" * 32, "not measured"),
        ("'HELLO小米' * 28, en table", en, "HELLO小米" * 28, "not measured"),
        ("'A' * 200, en table (BPE splits)", en, "A" * 200, "not measured"),
        ("'小米A' * 1000 (over the line limit)", zh, "小米A" * 1000, "not measured"),
        (f"file: {MAX_KEYWORD_LINES} x '小米A' * 23", zh, worst_file, f"{MAX_KEYWORD_LINES} x 34 s"),
    ]
    rows = []
    for name, table, text, old in cases:
        n = max(1, runs // 10) if text is worst_file else runs
        seconds, result = timed(lambda text=text, table=table: parse_keywords(text, table), n)
        rows.append((name, "zh" if table is zh else "en", seconds, result, old))
    return rows


def wav(rate: int, frames: int = 16000) -> bytes:
    data = np.zeros(frames, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_rows(runs: int, folder: Path) -> list[tuple[str, float, str, str]]:
    rows = []
    for rate, old in ((16000, "-"), (1, "reads for hours (176,000 s 'long')"), (0x7FFFFFFF, "asks for 539 GiB")):
        path = folder / f"rate{rate}.wav"
        path.write_bytes(wav(rate))
        seconds, result = timed(lambda path=path: open_source(str(path)).close(), runs)
        rows.append((f"header rate {rate} Hz" + (" (baseline)" if rate == 16000 else ""), seconds, result, old))
    return rows


def resampler_rows(runs: int) -> list[tuple[str, float, float, str]]:
    rows = []
    for rate in (48000, 44100, 44101, 384000, 383999):
        x = np.random.default_rng(0).standard_normal(rate).astype(np.float32)

        def one_second(rate: int = rate, x: np.ndarray = x) -> None:
            Resampler(rate, 16000).process(x, final=True)

        tracemalloc.start()
        one_second()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        seconds, _ = timed(one_second, max(1, runs // 4))
        r = Resampler(rate, 16000)
        how = "exact table" if r._grid is None else f"grid of {r._grid + 1}"
        rows.append((f"{rate} Hz ({r.up}/{r.down}, {how})", seconds, peak / 2**20, "-"))
    # What the old constructor would have allocated for a 0x7fffffff Hz header (computed, not run): up phases x
    # 2*taps float64 weights.
    up, down = 16000, 0x7FFFFFFF
    taps = math.ceil(16 / (up / down * 0.95))
    rows.append(("2147483647 Hz (old code, computed)", float("nan"), up * 2 * taps * 8 / 2**20, "now refused"))
    return rows


def config_rows(runs: int, folder: Path) -> list[tuple[str, float, str]]:
    bomb = ["a0: &a0 '" + "lol" * 100 + "'"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    cases = {
        "config.yaml of the repo (baseline)": (REPO / "config.yaml").read_text(encoding="utf-8"),
        "alias bomb under llm.system_prompt": "\n".join(bomb) + "\nllm:\n  system_prompt: *a8\n",
        "1 MiB + 10 bytes of comments": "# padding\n" * ((1 << 20) // 10 + 1),
        "[ nested 50,000 deep": "a: " + "[" * 50000 + "\n",
    }
    rows = []
    for name, text in cases.items():
        path = folder / "config.yaml"
        path.write_text(text, encoding="utf-8")
        seconds, result = timed(lambda path=path: load_settings(path), runs)
        rows.append((name, seconds, result))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per input (median)")
    args = parser.parse_args()
    if not KWS.is_dir():
        print(f"shared KWS models not found under {KWS}", file=sys.stderr)
        return 1
    print(describe_cpu())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nkeyword expansion (parse_keywords), median of {args.runs} calls (the file: {max(1, args.runs // 10)})")
    print(f"{'line':40} {'table':5} {'ms':>9}  {'result':44} old (issue 15)")
    for name, table, seconds, result, old in keyword_rows(args.runs):
        print(f"{name:40} {table:5} {seconds * 1000:9.2f}  {result:44} {old}")
    with tempfile.TemporaryDirectory() as tmp:
        print("\nWAV header checks (open_source), median of", args.runs, "calls")
        print(f"{'file':40} {'ms':>9}  {'result':60} old (issue 15)")
        for name, seconds, result, old in wav_rows(args.runs, Path(tmp)):
            print(f"{name:40} {seconds * 1000:9.2f}  {result:60} {old}")
        print("\nresampler to 16 kHz: 1 s of input, construction + processing; peak = tracemalloc's, first call")
        print(f"{'ratio':40} {'ms':>9}  {'peak MiB':>9}  note")
        for name, seconds, peak, note in resampler_rows(args.runs):
            print(f"{name:40} {seconds * 1000:9.2f}  {peak:9.1f}  {note}")
        print("\nconfig loading (load_settings), median of", args.runs, "calls")
        print(f"{'config':40} {'ms':>9}  result")
        for name, seconds, result in config_rows(args.runs, Path(tmp)):
            print(f"{name:40} {seconds * 1000:9.2f}  {result}")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
