"""The first line of a benchmark report: which CPU, and which of its SIMD features matter here.

The machines this project is measured on change from day to day (AVX-512 VNNI one day, AVX2 only the next), so
every figure carries the CPU it was measured on. Features come from /proc/cpuinfo (assistant/llm/weights.py).
"""

from __future__ import annotations

import os
import platform

from assistant.llm.weights import this_cpu


def describe_cpu() -> str:
    """e.g. "CPU: AMD EPYC (x86_64, 2 logical CPUs), SIMD: avx2 avx512_vnni avx512bw avx512f fma"."""
    cpu = this_cpu()
    dot = cpu.dot_product()
    return (
        f"CPU: {cpu.model} ({platform.machine()}, {os.cpu_count()} logical CPUs), "
        f"SIMD: {' '.join(cpu.relevant) or 'unknown'}; int8 dot product: {dot or 'none'}"
    )


if __name__ == "__main__":
    print(describe_cpu())
