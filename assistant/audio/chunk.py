"""The unit of audio every stage sees: 16 kHz mono float32 chunks stamped with their input time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray
    """float32 mono samples at 16 kHz, in [-1, 1]."""
    t: float
    """Seconds of input audio before this chunk's first sample."""

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def t_end(self) -> float:
        return self.t + self.duration


class HasSamples:
    """For the dataclasses that hold a piece of audio as `samples` (float32 mono 16 kHz): its length."""

    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class AudioSource(Protocol):
    """What every source offers: `async for chunk in source`, `close()`, and a count of dropped blocks."""

    sample_rate: int
    dropped_blocks: int

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    def close(self) -> None: ...


class Blocker:
    """Re-cuts arbitrary-length pieces into fixed blocks and stamps each with its input time."""

    def __init__(self, block: int):
        self.block = block
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self.emitted = 0  # samples handed out so far

    def push(self, x: np.ndarray) -> list[AudioChunk]:
        if len(x):
            self._pending.append(x)
            self._pending_len += len(x)
        out = []
        if self._pending_len >= self.block:
            # One piece (a file read, a microphone block: the common case) is cut into views, not copied.
            data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            cut = (len(data) // self.block) * self.block
            for i in range(0, cut, self.block):
                out.append(self._chunk(data[i : i + self.block]))
            self._pending = [data[cut:]] if cut < len(data) else []
            self._pending_len = len(data) - cut
        return out

    def skip(self, n: int) -> None:
        """Advance time over `n` samples that were lost (dropped blocks), keeping `t` true to the input."""
        self.emitted += n

    def flush(self) -> list[AudioChunk]:
        if not self._pending_len:
            return []
        data = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        return [self._chunk(data)]

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        chunk = AudioChunk(samples=samples, t=self.emitted / SAMPLE_RATE)
        self.emitted += len(samples)
        return chunk
