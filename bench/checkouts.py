"""MiniMind decode speed of two checkouts of this repo, interleaved in one run: did a change slow the runtime?

Each checkout's own `bench/llm.py --worker` loads the same exported model with that checkout's `assistant`
(PYTHONPATH set to the checkout), so only the runtime code differs. Rounds alternate the order (A B, B A, ...)
after a 0.2 s pause each, so load from other processes hits both alike; the median of --runs is reported with
the ratio B / A. Make the export with `python -m bench.llm --keep DIR` (DIR/int8).

    git worktree add /tmp/old <rev>
    .venv/bin/python -m bench.checkouts --model-dir DIR/int8 --a /tmp/old --b . [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import describe_cpu
from bench.llm import PAUSE_S, THREADS, Worker


class CheckoutWorker(Worker):
    """`bench/llm.py --worker` of one checkout (bench.llm's worker protocol: ready line, one JSON line per run)."""

    def __init__(self, checkout: Path, model_dir: Path, threads: int) -> None:  # own spawn: not super().__init__
        self.name = f"{checkout}@{threads}"
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.proc = subprocess.Popen(
            [sys.executable, "bench/llm.py", "--worker", str(model_dir), "--threads", str(threads)],
            cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._read()


def compare(a: Path, b: Path, model_dir: Path, runs: int) -> dict:
    rows = {}
    for threads in THREADS:
        workers = {"a": CheckoutWorker(a, model_dir, threads), "b": CheckoutWorker(b, model_dir, threads)}
        results: dict[str, list[dict]] = {"a": [], "b": []}
        try:
            for w in workers.values():  # warm-up
                w.run()
            for i in range(runs):
                for name in ("a", "b") if i % 2 == 0 else ("b", "a"):
                    time.sleep(PAUSE_S)
                    results[name].append(workers[name].run())
        finally:
            for w in workers.values():
                w.close()
        row = {}
        for name, rs in results.items():
            row[f"{name}_tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in rs)
            row[f"{name}_ttft_ms"] = statistics.median(r["ttft_ms"] for r in rs)
        row["b_over_a_tokens_per_s"] = row["b_tokens_per_s"] / row["a_tokens_per_s"]
        row["b_over_a_ttft"] = row["b_ttft_ms"] / row["a_ttft_ms"]
        rows[f"threads={threads}"] = row
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the reference checkout (e.g. the old code)")
    parser.add_argument("--b", type=Path, required=True, help="the checkout under test")
    parser.add_argument("--model-dir", type=Path, required=True, help="an exported model (int8)")
    parser.add_argument("--runs", type=int, default=10, help="measured runs per checkout and thread count")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = compare(args.a.resolve(), args.b.resolve(), args.model_dir.resolve(), args.runs)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), "runs": args.runs, "load": load, "rows": rows}))
        return 0
    print(describe_cpu())
    print(f"a = {args.a}, b = {args.b}; median of {args.runs} interleaved runs; load at the end {load[0]:.1f}")
    print("| threads | a tok/s | b tok/s | b/a | a TTFT ms | b TTFT ms | b/a |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name.split('=')[1]} | {r['a_tokens_per_s']:.0f} | {r['b_tokens_per_s']:.0f} | "
              f"{r['b_over_a_tokens_per_s']:.3f} | {r['a_ttft_ms']:.1f} | {r['b_ttft_ms']:.1f} | "
              f"{r['b_over_a_ttft']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
