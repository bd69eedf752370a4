"""Acoustic echo cancellation of our own voice: Speex's MDF echo canceller (Debian's libspeexdsp, through the
`speexdsp` Python binding), fed the TTS output as the reference.

Why Speex (docs/echo-cancellation.md): measured with bench/bargein.py on the simulated room it takes ~35 dB of
echo out offline and over 20 dB live in the daemon, at ~2 % of a core, and lifts the spotter's recall of a
phrase said over the echo from ~0 to ~100 % at 0 dB speech-to-echo. speexdsp builds in seconds against the
Debian package (`apt-get install libspeexdsp-dev swig`, then `pip install edge-assistant[aec]`). Without it the
daemon falls back to the hold-off and the text check (daemon.py).

The reference path. Speex subtracts a filtered copy of the reference from each 10 ms microphone frame: it
needs, for every input frame, the reference that was playing at that input time, with the echo never ahead of
its reference and a constant delay between them (its adaptive filter learns a fixed echo path of up to FILTER
samples; a path that jumps by even one sample must be learnt again, which costs most of the cancellation). So:

- The speech output plays on a clock of its own (reply/tts.py: WavFileOutput's period grid, like a sound
  card) and reports each slice with the monotonic time it starts playing.
- `ReferenceStream` turns those slices into 16 kHz pieces at input sample positions: a run of back-to-back
  slices goes through one streaming resampler and is placed sample by sample after the run's first position,
  which is the only one read from a clock. Stamping every slice from the wall clock (the first version) made
  the reference jitter by 1-30 samples against the echo and removed only 2-4 dB.
- Monotonic time maps to input time through the daemon's audio clock (monotonic - input time, at its smallest),
  fixed when the first slice arrives: a later, slightly better estimate would shift the path again. The
  estimate can only be late, which places the reference early: the safe side, inside the filter's reach.
- `process` consumes the reference in lockstep with the input, frame by frame; where nothing plays the
  reference is silence. A run whose end is reached without a next slice is flushed then (its resampler holds
  the last few samples back until it knows what follows). Reference that arrives for input already processed
  is counted (`late_samples`).

A real sound card (SpeakerOutput) opens a stream per sentence and reports the call time, which is off by the
device's unknown output latency, constant only within a sentence: the filter then re-learns at each sentence.
A duplex stream with a shared clock is what real devices need; not done yet.
"""

from __future__ import annotations

import collections
import logging
import threading

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.audio.resample import Resampler

log = logging.getLogger(__name__)

FRAME = 160  # 10 ms frames
FILTER = 4096  # 256 ms of echo path
TAIL_S = 0.5  # the canceller keeps running this long after our output ends (the room's echo tail)
REANCHOR_S = 0.03  # the audio clock improved by more than this while nothing plays: re-anchor the reference


def available() -> bool:
    try:
        import speexdsp  # noqa: F401
    except ImportError:
        return False
    return True


class ReferenceStream:
    """The played output as 16 kHz pieces at input sample positions (not thread-safe: callers lock).

    `add(samples, rate, input_t)`: a slice starting to play at input time `input_t`. A slice that starts where the
    previous one ended (within half an output sample) continues its run: same resampler, next position."""

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._rate = 0
        self._next_t = 0.0  # input time where the current run's last slice ends
        self._pos = 0  # input sample position of the next resampled output of the current run

    def add(self, samples: np.ndarray, rate: int, input_t: float) -> list[tuple[int, np.ndarray]]:
        pieces: list[tuple[int, np.ndarray]] = []
        x = np.asarray(samples, dtype=np.float32)
        contiguous = self._resampler is not None and rate == self._rate and abs(input_t - self._next_t) < 0.5 / rate
        if not contiguous:
            pieces += self.flush()
            self._resampler, self._rate = Resampler(rate, SAMPLE_RATE), rate
            self._pos = int(round(input_t * SAMPLE_RATE))
        assert self._resampler is not None
        out = self._resampler.process(x)
        if len(out):
            pieces.append((self._pos, out))
            self._pos += len(out)
        self._next_t = input_t + len(x) / rate
        return pieces

    def run_end(self) -> int | None:
        """Input sample position where the current run's played audio ends; None between runs."""
        return None if self._resampler is None else int(round(self._next_t * SAMPLE_RATE))

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The resampler's last outputs of the current run (it holds a few samples back for its filter)."""
        if self._resampler is None:
            return []
        out = self._resampler.process(np.zeros(0, np.float32), final=True)
        self._resampler = None
        piece = [(self._pos, out)] if len(out) else []
        self._pos += len(out)
        return piece


class EchoCanceller:
    """Holds the played reference and cancels it out of input chunks (thread-safe: TTS thread vs loop)."""

    def __init__(self) -> None:
        import speexdsp

        self._ec = speexdsp.EchoCanceller.create(FRAME, FILTER, SAMPLE_RATE)
        self._lock = threading.Lock()
        self._stream = ReferenceStream()
        self._pieces: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # by position, in order
        self._offset: float | None = None  # monotonic - input time, fixed at the first slice
        self._pending = np.zeros(0, dtype=np.float32)  # input samples not yet a whole frame
        self._pending_ref = np.zeros(0, dtype=np.float32)
        self._done = 0  # input sample position up to which the reference has been consumed
        self.active_until = 0.0  # input time up to which reference audio exists
        self.late_samples = 0  # reference samples that came after their input had been processed
        self.energy_in = 0.0  # sum of squares of the input, and of the output, over frames with a reference
        self.energy_out = 0.0

    def played(self, samples: np.ndarray, rate: int, t: float, clock_offset: float) -> None:
        """`samples` start playing at monotonic time `t`; `clock_offset` is the audio clock's monotonic - input
        time now (daemon.py)."""
        if not np.isfinite(clock_offset):
            return  # no input yet: nothing to cancel it from
        with self._lock:
            idle = self.active_until * SAMPLE_RATE <= self._done
            if self._offset is None or (idle and clock_offset < self._offset - REANCHOR_S):
                if self._offset is not None:
                    log.info("echo canceller: audio clock re-anchored by %.1f ms", (self._offset - clock_offset) * 1e3)
                self._offset = clock_offset
                self._pieces.extend(self._stream.flush())
                self._stream = ReferenceStream()
            for pos, piece in self._stream.add(samples, rate, t - self._offset):
                late = max(0, min(len(piece), self._done - pos))
                if late:
                    log.debug("echo canceller: %d reference samples late at input %.3f s (%d processed)", late,
                              pos / SAMPLE_RATE, self._done - pos)
                self.late_samples += late
                self._pieces.append((pos, piece))
                self.active_until = max(self.active_until, (pos + len(piece)) / SAMPLE_RATE)

    def active(self, t: float) -> bool:
        """Whether input at time `t` needs the canceller: something we played may still be heard there."""
        return self.active_until > 0 and t < self.active_until + TAIL_S

    def _reference(self, start: int, count: int) -> np.ndarray:
        """The reference for input samples [start, start + count), consumed (lock held)."""
        ref = np.zeros(count, dtype=np.float32)
        end = start + count
        while self._pieces:
            pos, piece = self._pieces[0]
            if pos + len(piece) > start:
                break
            self._pieces.popleft()
        for pos, piece in self._pieces:
            if pos >= end:
                break
            lo, hi = max(pos, start), min(pos + len(piece), end)
            if lo < hi:
                ref[lo - start : hi - start] = piece[lo - pos : hi - pos]
        self._done = max(self._done, end)
        return ref

    def process(self, chunk: AudioChunk) -> AudioChunk:
        """The chunk with the echo of our own output taken out (whole 10 ms frames; the rest next time)."""
        start = int(round(chunk.t * SAMPLE_RATE))
        with self._lock:
            end = self._stream.run_end()
            if end is not None and end <= start + len(chunk.samples):
                # No slice continued the run before its end is heard: the sentence ended (or the output
                # underran). Its last resampled samples are needed now, not when the next sentence starts.
                self._pieces.extend(self._stream.flush())
            ref = self._reference(start, len(chunk.samples))
        mic = np.concatenate([self._pending, chunk.samples])
        far = np.concatenate([self._pending_ref, ref])
        whole = len(mic) // FRAME * FRAME
        m16 = (np.clip(mic[:whole], -1, 1) * 32767).astype(np.int16)
        r16 = (np.clip(far[:whole], -1, 1) * 32767).astype(np.int16)
        out = np.empty(whole, dtype=np.float32)
        for j in range(0, whole, FRAME):
            frame = self._ec.process(m16[j : j + FRAME].tobytes(), r16[j : j + FRAME].tobytes())
            out[j : j + FRAME] = np.frombuffer(frame, np.int16) / 32767.0
            if r16[j : j + FRAME].any():
                self.energy_in += float(np.sum(np.square(mic[j : j + FRAME], dtype=np.float64)))
                self.energy_out += float(np.sum(np.square(out[j : j + FRAME], dtype=np.float64)))
        t0 = chunk.t - len(self._pending) / SAMPLE_RATE
        self._pending, self._pending_ref = mic[whole:], far[whole:]
        return AudioChunk(out, t0)

    def reduction_db(self) -> float | None:
        """Input over output energy on frames where we played something (echo removed, if the user was quiet)."""
        if self.energy_in <= 0 or self.energy_out <= 0:
            return None
        return float(10 * np.log10(self.energy_in / self.energy_out))
