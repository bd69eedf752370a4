"""Benchmarks: run each from the repo root as `python -m bench.NAME` (see BENCHMARKS.md)."""
