"""A mix planned part by part: silence, pink room noise, planted wake phrases, speech.

A `Mix` appends parts and remembers what each one was (`Segment`), so a test can score the daemon's events
against the plan: which wake phrase was planted where, how many seconds of the mix were speech that must not
wake the assistant. `chunks_of(segments)` streams a plan of any length as 100 ms chunks without ever holding the
whole mix (the soak runs hours of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.audio.chunk import HasSamples
from speechdata.assets import WAKE_LABEL
from speechdata.audio import BLOCK, SAMPLE_RATE, at_gain, pink_noise, wake_phrase, write_wav


@dataclass(frozen=True)
class Segment(HasSamples):
    """One planned part of a mix. `kind`: wake (planted wake phrase), utterance (said after a wake),
    speech (must not wake), silence, noise."""

    kind: str
    name: str
    samples: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Placed:
    """A segment's place in the mix, in seconds of input audio."""

    kind: str
    name: str
    start: float
    end: float

    @classmethod
    def at(cls, segment: Segment, start: int, end: int) -> Placed:
        """`segment` placed from sample `start` to sample `end` of the mix."""
        return cls(segment.kind, segment.name, start / SAMPLE_RATE, end / SAMPLE_RATE)


class Mix:
    """A mix being built part by part; `placed` says where each part landed."""

    def __init__(self, noise_dbfs: float | None = None, seed: int = 0) -> None:
        self.noise_dbfs = noise_dbfs  # background room noise under everything (None: clean)
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []
        self.placed: list[Placed] = []
        self._n = 0

    def add(self, segment: Segment) -> Placed:
        samples = segment.samples
        if self.noise_dbfs is not None and len(samples):
            samples = samples + pink_noise(segment.seconds, self.noise_dbfs, self.rng)
        placed = Placed.at(segment, self._n, self._n + len(samples))
        self.parts.append(np.asarray(samples, dtype=np.float32))
        self.placed.append(placed)
        self._n += len(samples)
        return placed

    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)

    def write(self, path: Path) -> Path:
        return write_wav(path, self.audio())


def planted_wake(utterance: np.ndarray, name: str, *, gain_db: float = 0.0) -> list[Segment]:
    """The wake phrase followed directly by `utterance`, both at `gain_db`."""
    return [
        Segment("wake", WAKE_LABEL, at_gain(wake_phrase(), gain_db)),
        Segment("utterance", name, at_gain(utterance, gain_db)),
    ]


def placed_of(segments: Iterable[Segment]) -> Iterator[tuple[Segment, Placed]]:
    """Each segment with its place, for plans streamed with `chunks_of` (same arithmetic as Mix)."""
    n = 0
    for segment in segments:
        end = n + len(segment.samples)
        yield segment, Placed.at(segment, n, end)
        n = end


def chunks_of(segments: Iterable[Segment], block: int = BLOCK) -> Iterator[tuple[np.ndarray, float]]:
    """(samples, t) blocks of `block` samples across segment boundaries; only the last may be shorter."""
    pending = np.zeros(0, dtype=np.float32)
    emitted = 0
    for segment in segments:
        pending = np.concatenate([pending, np.asarray(segment.samples, dtype=np.float32)])
        cut = len(pending) - len(pending) % block
        for i in range(0, cut, block):
            yield pending[i : i + block], (emitted + i) / SAMPLE_RATE
        emitted += cut
        pending = pending[cut:]
    if len(pending):
        yield pending, emitted / SAMPLE_RATE
