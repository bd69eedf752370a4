"""Hand-made hostile inputs: WAV headers with any field, and every float key of the settings."""

from __future__ import annotations

import dataclasses
import struct
import typing

import numpy as np

from assistant.settings import Settings


def crafted_wav(rate: int, channels: int, frames: int = 1600, *, bits: int = 16, fmt: int = 1,
                byte_rate: int | None = None, block_align: int | None = None, data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file written by hand, so every header field can hold what a corrupt or hostile file has."""
    align = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    rate_bytes = byte_rate if byte_rate is not None else (rate * align) & 0xFFFFFFFF
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(frames * max(channels, 1)) * 3000).astype("<i2").tobytes()
    if bits != 16:  # silence of the size the header implies (at most 64 bytes a frame: a fuzzed align is huge)
        data = bytes(frames * min(max(1, align), 64))
    chunk = struct.pack("<HHIIHH", fmt, channels & 0xFFFF, rate & 0xFFFFFFFF, rate_bytes, align, bits & 0xFFFF)
    size = len(data) if data_size is None else data_size & 0xFFFFFFFF
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(chunk)) + chunk + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def _float_keys(cls: type = Settings, prefix: str = "") -> list[str]:
    """Every dotted key whose value is read as a float, found from the dataclasses themselves."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(tp, key + ".")
        elif tp is float or float in typing.get_args(tp):
            keys.append(key)
    return keys


def _nested(dotted: str, value: str) -> str:
    parts = dotted.split(".")
    lines = [f"{'  ' * i}{part}:" for i, part in enumerate(parts[:-1])]
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


FLOAT_KEYS = _float_keys()
