"""One line naming the CPU a benchmark ran on and the SIMD features its kernels can use.

Every bench report starts with it (issue 14): onnxruntime's MLAS and llama.cpp's ggml pick their kernels at run
time from these features, so a figure means little without them, and BENCHMARKS.md keeps one row per CPU class.

Read from /proc/cpuinfo (Linux, x86 and ARM): the standard library has no CPU-feature query, and the small
libraries that do (py-cpuinfo) shell out or parse the same file. Elsewhere: platform.processor(), no features.

    .venv/bin/python -m bench.cpu
"""

from __future__ import annotations

import platform
from pathlib import Path

# The features the int8/int4 kernels branch on, in the order people write them. x86: AVX2 + FMA (the baseline
# fast path), AVX-512 and its VNNI int8 dot product, AVX-VNNI (the 256-bit VNNI of Alder Lake / Zen 5 laptops).
# ARM: NEON (asimd) and the int8 dot product (asimddp, the Raspberry Pi 5 has it, the Pi 4 does not), i8mm.
X86_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve")


def describe_cpu(cpuinfo: str | None = None) -> str:
    """e.g. "CPU: AMD EPYC (family 25, model 17), 2 logical CPUs; SIMD: avx2 fma avx512f avx512_vnni"."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields = _first_fields(cpuinfo)
    name = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.processor()
    name = name or platform.machine() or "unknown CPU"
    ident = []
    if "cpu family" in fields:  # x86: family/model tell e.g. Zen 3 (25/1) from Zen 4 (25/17) where the name does not
        ident.append(f"family {fields['cpu family']}, model {fields.get('model', '?')}")
    if "CPU part" in fields:  # ARM: 0xd08 Cortex-A72 (Pi 4), 0xd0b Cortex-A76 (Pi 5)
        ident.append(f"part {fields['CPU part']}")
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    wanted = ARM_FEATURES if "Features" in fields and "flags" not in fields else X86_FEATURES
    present = [f for f in wanted if f in flags]
    count = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    ident_text = f" ({'; '.join(ident)})" if ident else ""
    count_text = f", {count} logical CPUs" if count else ""
    return f"CPU: {name}{ident_text}{count_text}; SIMD: {' '.join(present) or 'none of ' + ' '.join(wanted)}"


def _first_fields(cpuinfo: str) -> dict[str, str]:
    """The first value of each "key : value" line (the first processor's; ARM puts Hardware/Model at the end)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


if __name__ == "__main__":
    print(describe_cpu())
