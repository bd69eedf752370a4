"""The chime before a timer or alarm announcement: two short sine tones, faded in and out (no clicks)."""

from __future__ import annotations

import numpy as np

CHIME_RATE = 16000


def chime(rate: int = CHIME_RATE, tones: tuple[float, ...] = (880.0, 1320.0), tone_s: float = 0.18,
          gap_s: float = 0.06, level: float = 0.3) -> np.ndarray:
    """float32 mono samples at `rate`."""
    n = int(rate * tone_s)
    t = np.arange(n, dtype=np.float32) / rate
    fade = np.minimum(1.0, np.minimum(t, tone_s - t) / 0.02).astype(np.float32)
    gap = np.zeros(int(rate * gap_s), dtype=np.float32)
    pieces = []
    for freq in tones:
        pieces += [(level * np.sin(2 * np.pi * freq * t) * fade).astype(np.float32), gap]
    return np.concatenate(pieces)
