"""The assistant's own voice fed back into its input through a simulated room, for barge-in tests and
bench/bargein.py (a helper module, not a test).

- `Room`: a delay (20-80 ms), an attenuation and a synthetic impulse response (the direct path, then an
  exponentially decaying noise tail with the given RT60 and direct-to-reverberant ratio), seeded so a run
  is repeatable.
- `LoopbackOutput`: the WAV output sink paced like a speaker (reply/tts.py WavFileOutput, realtime); each
  slice it writes goes through the room into an `EchoLoop` at the input time it is played.
- `LiveSource`: 100 ms chunks paced in real time (a live microphone); each chunk is the planted user audio plus
  the echo that reached the microphone by then. `plant(audio, t)` adds user audio at input time t, also while
  the daemon runs (a test plants "stop" once it hears the assistant speak).

The audio clock: input time t = seconds since the source's first chunk. An output slice the sink plays at
monotonic time w (its output clock, reply/tts.py WavFileOutput) is at input time w - origin; its echo reaches
the input `room.delay_s` later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.audio.aec import ReferenceStream
from assistant.audio.chunk import AudioChunk
from assistant.reply.tts import WavFileOutput

SAMPLE_RATE = 16000
BLOCK = 1600


@dataclass(frozen=True)
class Room:
    delay_s: float = 0.05  # loudspeaker -> microphone, 20-80 ms
    gain_db: float = -6.0  # level of the direct path at the microphone
    rt60_s: float = 0.25  # reverberation time of the synthetic tail
    drr_db: float = 6.0  # direct-to-reverberant energy ratio: the tail carries 1/4 of the direct energy
    seed: int = 0

    def energy_gain(self) -> float:
        """RMS gain of the whole room (direct path and tail) on a long signal."""
        return float(np.sqrt(np.sum(self.impulse_response().astype(np.float64) ** 2)))

    def impulse_response(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        delay = int(round(self.delay_s * SAMPLE_RATE))
        length = int(self.rt60_s * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        tail = rng.standard_normal(length) * np.exp(-6.9 * t / self.rt60_s)
        tail[: int(0.005 * SAMPLE_RATE)] = 0.0  # first reflections after 5 ms
        tail *= np.sqrt(10 ** (-self.drr_db / 10) / np.sum(tail**2))  # tail energy = direct energy / DRR
        ir = np.zeros(delay + length, dtype=np.float64)
        ir[delay] = 1.0
        ir[delay:] += tail
        return (ir * 10 ** (self.gain_db / 20)).astype(np.float32)


class EchoLoop:
    """What the microphone picks up of our own output, by input sample position."""

    def __init__(self, room: Room, seconds: float = 600.0) -> None:
        self.room = room
        self.ir = room.impulse_response()
        self.echo = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        self.origin: float | None = None  # monotonic time of input t = 0
        self.played_until = 0.0  # input time at which the last output sample was played
        self._stream = ReferenceStream()  # the 16 kHz signal at input positions

    def played(self, samples: np.ndarray, rate: int, wall: float) -> None:
        if self.origin is None:
            return
        # `wall` is the slice's play time on the sink's output clock (reply/tts.py WavFileOutput): back-to-back
        # slices are exactly one period apart, as a sound card plays them, and go through one resampler (the
        # loudspeaker plays a continuous signal).
        for start, x in self._stream.add(samples, rate, wall - self.origin):
            self.played_until = (start + len(x)) / SAMPLE_RATE
            wet = np.convolve(x, self.ir)
            end = min(len(self.echo), start + len(wet))
            if start < end:
                self.echo[start:end] += wet[: end - start]

    def take(self, start: int, count: int) -> np.ndarray:
        return self.echo[start : start + count]


class LoopbackOutput(WavFileOutput):
    """The paced WAV sink whose every written slice is also played into the room."""

    def __init__(self, path: Path, loop: EchoLoop) -> None:
        super().__init__(path, realtime=True)
        self.loop = loop
        self.last_write_t: float | None = None  # input time the last written sample ends (audio clock)

    def _on_write(self, samples: np.ndarray, sample_rate: int, t: float) -> None:
        super()._on_write(samples, sample_rate, t)  # the daemon's echo canceller hears it first
        self.loop.played(samples, sample_rate, t)
        if self.loop.origin is not None:
            self.last_write_t = t - self.loop.origin + len(samples) / sample_rate


class LiveSource:
    """Real-time paced chunks: planted user audio plus the room's echo of our own output."""

    def __init__(self, loop: EchoLoop, seconds: float, *, echo: bool = True, block: int = BLOCK) -> None:
        self.loop = loop
        self.block = block  # samples per chunk (a microphone's audio.block_ms)
        self.user = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        self.use_echo = echo
        self.t = 0.0  # input time of the end of the last chunk handed out
        self.end: float | None = None  # input time at which to stop early (a test that has seen enough)

    def plant(self, audio: np.ndarray, t: float, gain: float = 1.0) -> tuple[float, float]:
        """Add `audio` at input time `t` (clipped to the source's length); returns its (start, end) times."""
        start = int(round(t * SAMPLE_RATE))
        end = min(len(self.user), start + len(audio))
        self.user[start:end] += audio[: end - start] * gain
        return start / SAMPLE_RATE, end / SAMPLE_RATE

    async def _chunks(self) -> AsyncIterator[AudioChunk]:
        origin = time.monotonic()
        self.loop.origin = origin
        block = self.block
        for start in range(0, len(self.user), block):
            if self.end is not None and start / SAMPLE_RATE >= self.end:
                break
            # A chunk is handed out once it has been "recorded": at the wall time of its last sample.
            wait = origin + (start + block) / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            samples = self.user[start : start + block].copy()
            if self.use_echo:
                samples += self.loop.take(start, len(samples))
            self.t = (start + len(samples)) / SAMPLE_RATE
            yield AudioChunk(np.clip(samples, -1.0, 1.0), start / SAMPLE_RATE)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._chunks()

    def close(self) -> None:
        pass


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
