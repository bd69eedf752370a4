"""A few rows of bench/llm.py, alternated many times: ours vs the builder's graph in genai (vs llama.cpp).

bench/llm.py times a dozen engines per round, so on a shared 2-core machine each gets few runs before the load
changes. This times only the rows named, with bench/llm.py's own workers and protocol (same prompts, greedy 128
tokens, 0.2 s pause before each run, median of --runs), for a closer look at one pair:

    .venv/bin/python -m bench.genai_ab --runs 9 --threads 1 2 \
        --ours int4=/tmp/llm/int4 --genai int4-b128=/tmp/llm/genai/int4-b128 --gguf Q4_0=/tmp/llm/gguf/model-Q4_0.gguf

The folders are those `bench.llm --keep DIR` leaves (DIR/int4, DIR/genai/int4-b128, DIR/gguf/model-Q4_0.gguf).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.cpu import describe_cpu
from bench.llm import PAUSE_S, Worker

MODULES = {"ours": "bench.llm", "genai": "bench.genai", "gguf": "bench.llamacpp"}


def _labelled(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PATH")
    return label, Path(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for kind in MODULES:
        parser.add_argument(f"--{kind}", type=_labelled, action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[64])
    args = parser.parse_args()
    workers: dict[str, Worker] = {}
    try:
        for threads in args.threads:
            for kind, module in MODULES.items():
                for label, path in getattr(args, kind):
                    name = f"{kind} {label}@{threads}"
                    workers[name] = Worker(name, path, threads, module=module)
        results = {name: {n: [] for n in args.prompt_tokens} for name in workers}
        for worker in workers.values():  # warm-up
            worker.run(max(args.prompt_tokens))
        load_before = os.getloadavg()[0]
        for _ in range(args.runs):
            for name, worker in workers.items():
                for length in args.prompt_tokens:
                    time.sleep(PAUSE_S)
                    results[name][length].append(worker.run(length))
        rss = {name: w.close()["rss_mb"] for name, w in workers.items()}
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
    print(describe_cpu())
    print(f"median of {args.runs} alternated runs; 1-min load average {load_before:.1f} after warm-up, "
          f"{os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    header = " | ".join(f"TTFT ms @{n} | tok/s @{n}" for n in args.prompt_tokens)
    print(f"| engine | threads | {header} | RSS MB |")
    print("|---|---|" + "---|---|" * len(args.prompt_tokens) + "---|")
    for name, by_length in results.items():
        label, _, threads = name.partition("@")
        cells = " | ".join(
            f"{statistics.median(r['ttft_ms'] for r in runs):.1f} | "
            f"{statistics.median(r['tokens_per_s'] for r in runs):.0f}"
            for runs in by_length.values()
        )
        print(f"| {label} | {threads} | {cells} | {rss[name]:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
