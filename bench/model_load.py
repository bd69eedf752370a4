"""What checking model.json's sha256 at load costs: MiniMindOnnx load with and without verification, same run.

Loads alternate (verified, unverified, verified, ...) with the files in the page cache for both, and the median
of --runs is reported with the ratio; the sha256 of the files alone is timed as well. Without --model-dir it
exports MiniMind2-Small-shaped random int8 weights with the project's exporter (as bench/llm.py does), the size
of the model a Pi runs.

    .venv/bin/python -m bench.model_load [--runs 15] [--model-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.cpu import describe_cpu

REPO = Path(__file__).resolve().parents[1]


def _load_ms(model_dir: Path, verify: bool) -> float:
    from assistant.llm.runtime import MiniMindOnnx

    started = time.perf_counter()
    MiniMindOnnx(model_dir, threads=1, verify_sha256=verify)
    return (time.perf_counter() - started) * 1000


def _hash_ms(model_dir: Path) -> float:
    names = json.loads((model_dir / "model.json").read_text())["files"]
    started = time.perf_counter()
    for name in names:
        hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    return (time.perf_counter() - started) * 1000


def measure(model_dir: Path, runs: int) -> dict:
    _load_ms(model_dir, True)  # warm the page cache and onnxruntime's first-use costs for both
    times: dict[str, list[float]] = {"verified": [], "unverified": [], "sha256_only": []}
    for _ in range(runs):
        times["verified"].append(_load_ms(model_dir, True))
        times["unverified"].append(_load_ms(model_dir, False))
        times["sha256_only"].append(_hash_ms(model_dir))
    files = json.loads((model_dir / "model.json").read_text())["files"]
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "model_dir": str(model_dir),
        "bytes_hashed": sum(entry["bytes"] for entry in files.values()),
        "runs": runs,
        "median_ms": {key: round(value, 1) for key, value in median.items()},
        "ratio_verified_to_unverified": round(median["verified"] / median["unverified"], 3),
    }


def _small_int8(root: Path) -> Path:
    from bench.llm import export_dirs, small_model

    int8, _ = export_dirs(small_model(seed=0), root)
    return int8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: MiniMind2-Small-shaped int8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-model-load-") as tmp:
        model_dir = args.model_dir or _small_int8(Path(tmp))
        report = measure(model_dir, args.runs)
    if args.json:
        print(json.dumps(report))
        return 0
    m = report["median_ms"]
    print(describe_cpu())
    print(f"{report['model_dir']}: {report['bytes_hashed'] / 1e6:.1f} MB hashed, median of {report['runs']} loads")
    print(f"  load, sha256 verified (default)   {m['verified']:8.1f} ms")
    print(f"  load, llm.verify_sha256: false    {m['unverified']:8.1f} ms   (baseline)")
    print(f"  sha256 of the files alone         {m['sha256_only']:8.1f} ms")
    print(f"  ratio verified / unverified       {report['ratio_verified_to_unverified']:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
