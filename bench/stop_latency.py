"""When the spotter reports a keyword, by configuration: one stream (the wake word's) against the barge-in
spotter's staggered streams and num_trailing_blanks, offline, on the shared clips.

Each phrase said in a shared clip (bench/keywords.py CASES) is spotted alone, the clip fed in 100 ms blocks
after --offsets different lengths of leading silence (0.5 s + 0.04 s steps: the keyword falls at a different
place of the encoder's 0.32 s chunk each time). Printed: the input time of each report, and per configuration
the mean shift of the report against the baseline (1 stream, num_trailing_blanks 1) over the same offsets.
No wall clock is involved: these are positions in the input.

    .venv/bin/python -m bench.stop_latency [--lang en] [--offsets 8]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from assistant.audio.chunk import AudioChunk
from assistant.models.files import find_transducer
from assistant.wake.keywords import load_tokens, parse_keywords
from assistant.wake.spotter import WakeWord, barge_in_spotter
from bench.keywords import CASES, _path
from speechdata.audio import load_clip

RATE = 16000
BLOCK = 1600
CONFIGS = [(1, 1), (0, 1), (1, 2), (0, 2), (0, 4)]  # (num_trailing_blanks, streams); (1, 1) is the baseline


def report_times(spotter, audio: np.ndarray, offsets: list[float]) -> list[float | None]:
    times: list[float | None] = []
    for offset in offsets:
        x = np.concatenate([np.zeros(int(offset * RATE), np.float32), audio, np.zeros(RATE, np.float32)])
        spotter.reset(0.0)
        hit = None
        for i in range(0, len(x), BLOCK):
            found = spotter.accept(AudioChunk(x[i : i + BLOCK], i / RATE))
            hit = hit or found
        times.append(None if hit is None else round(hit.t - offset, 2))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", choices=["en", "zh"], default="en")
    parser.add_argument("--offsets", type=int, default=8)
    args = parser.parse_args()
    case = CASES[args.lang]
    files = find_transducer(case["model"], "kws")
    table = load_tokens(files.tokens, files.bpe_model)
    offsets = [0.5 + k * 0.04 for k in range(args.offsets)]
    results: dict[tuple[int, int], dict[str, list[float | None]]] = {c: {} for c in CONFIGS}
    for phrase, clips in case["phrases"].items():
        wake = WakeWord(files, parse_keywords(phrase, table))
        audio = load_clip(_path(clips[0]))
        for blanks, streams in CONFIGS:
            times = report_times(barge_in_spotter(wake, streams, blanks), audio, offsets)
            results[(blanks, streams)][phrase] = times
            print(f"{phrase:20} blanks {blanks} streams {streams}: {times}", flush=True)
    for config in CONFIGS:
        shifts = [a - b for phrase, times in results[config].items()
                  for a, b in zip(times, results[(1, 1)][phrase], strict=True) if a is not None and b is not None]
        misses = sum(t is None for times in results[config].values() for t in times)
        print(f"num_trailing_blanks {config[0]}, {config[1]} stream(s): mean report shift vs 1 stream/1 blank "
              f"{statistics.mean(shifts) * 1000:+.0f} ms over {len(shifts)} reports, {misses} misses")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
