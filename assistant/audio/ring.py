"""The last few seconds of audio with their time stamps, so the ASR can start from a past moment."""

from __future__ import annotations

import collections
import logging

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk

log = logging.getLogger(__name__)


class AudioRing:
    """The last `seconds` of audio with absolute time stamps, so the ASR can start from a past moment
    (the end of the wake word) that the spotter only reports a little later."""

    def __init__(self, seconds: float = 10.0):
        self.seconds = seconds
        self._chunks: collections.deque[AudioChunk] = collections.deque()
        self._samples = 0

    def push(self, chunk: AudioChunk) -> None:
        self._chunks.append(chunk)
        self._samples += len(chunk.samples)
        limit = int(self.seconds * SAMPLE_RATE)
        while self._chunks and self._samples - len(self._chunks[0].samples) >= limit:
            self._samples -= len(self._chunks.popleft().samples)

    @property
    def start_t(self) -> float:
        return self._chunks[0].t if self._chunks else 0.0

    @property
    def end_t(self) -> float:
        return self._chunks[-1].t_end if self._chunks else 0.0

    def clear(self) -> None:
        self._chunks.clear()
        self._samples = 0

    def since(self, t: float) -> np.ndarray:
        """Samples from input time `t` to the newest (from the oldest held if `t` is older than that)."""
        if self._chunks and t < self.start_t - 1e-6:
            log.debug("ring holds audio from %.2f s only; %.2f s requested", self.start_t, t)
        parts = []
        for chunk in self._chunks:
            if chunk.t_end <= t:
                continue
            skip = max(0, int(round((t - chunk.t) * SAMPLE_RATE)))
            parts.append(chunk.samples[skip:])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
