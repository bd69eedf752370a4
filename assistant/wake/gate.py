"""Silence gate in front of the wake word: the keyword spotter runs only while someone may be speaking.

Most of a day is silence, and the spotter is the only model running while idle, so its CPU is the idle cost.
A gate that costs ~100x less than the spotter decides when the spotter must run; while the gate is closed the
audio only goes into a pre-roll ring, and when the gate opens the ring is replayed into the spotter first, so
the onset of a wake word (which is what opens the gate) is never lost.

Two gates share one shape (`update(samples) -> is_open`, `close()`, `reset()`):
- EnergyGate: 100 ms block RMS in dBFS against an adaptive noise floor, with hysteresis (open above
  floor + open_db for `open_blocks` blocks, close after `hang_s` below floor + close_db).
- SileroGate: silero VAD's speech/non-speech state. It costs ~0.5 % of a core on its own (the spotter: ~2.3 %),
  the whole idle budget, and in bench/idle.py the spotter behind it found only 4 of 7 keywords (it opens after
  0.25 s of confirmed speech), so the energy gate is the default (BENCHMARKS.md).

sherpa_onnx is loaded only when a silero gate is made (assistant.audio.vad imports it lazily), so importing the
settings stays cheap.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.audio.vad import SAMPLE_RATE, feed, make_vad
from assistant.errors import ConfigError
from assistant.settings import GateSettings, VadSettings
from assistant.wake.spotter import Spotter

log = logging.getLogger(__name__)

_SILENT_DB = -100.0  # dBFS reported for digital silence, so log10 never sees 0


def block_dbfs(samples: np.ndarray) -> float:
    """RMS level of `samples` in dB relative to full scale (a full-scale square wave is 0 dBFS)."""
    if len(samples) == 0:
        return _SILENT_DB
    power = float(np.dot(samples, samples)) / len(samples)
    return 10.0 * math.log10(power) if power > 1e-10 else _SILENT_DB


class EnergyGate:
    """Adaptive-floor energy detector with hysteresis; holds the floor and the open/closed state."""

    def __init__(self, settings: GateSettings, block_s: float = 0.1) -> None:
        if settings.close_db >= settings.open_db:
            raise ValueError("close_db must be below open_db (hysteresis)")
        self._s = settings
        self._block = int(round(block_s * SAMPLE_RATE))
        self._hang_blocks = max(1, int(math.ceil(settings.hang_s / block_s)))
        self._rise = settings.floor_rise_db_per_s * block_s
        self._pending = np.zeros(0, dtype=np.float32)
        self.floor_db: float | None = None
        self.level_db = _SILENT_DB
        self.is_open = False
        self._loud = 0
        self._quiet = 0

    def update(self, samples: np.ndarray) -> bool:
        data = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n_blocks = len(data) // self._block
        for i in range(n_blocks):
            self._block_level(block_dbfs(data[i * self._block : (i + 1) * self._block]))
        self._pending = np.array(data[n_blocks * self._block :], dtype=np.float32)
        return self.is_open

    def _block_level(self, level: float) -> None:
        self.level_db = level
        floor = self.floor_db if self.floor_db is not None else level
        # The floor follows quiet blocks down quickly and loud ones up slowly, so it sits at the lower
        # envelope of the room noise and speech (short, loud) barely moves it.
        if level < floor:
            floor += 0.5 * (level - floor)
        else:
            floor = min(level, floor + self._rise)
        floor = max(floor, self._s.min_floor_dbfs)
        self.floor_db = floor
        if self.is_open:
            self._quiet = self._quiet + 1 if level < floor + self._s.close_db else 0
            if self._quiet >= self._hang_blocks:
                self.is_open = False
                self._loud = 0
        else:
            self._loud = self._loud + 1 if level > floor + self._s.open_db else 0
            if self._loud >= self._s.open_blocks:
                self.is_open = True
                self._quiet = 0

    def close(self) -> None:
        """Closed state, keeping the learned noise floor."""
        self.is_open = False
        self._loud = 0
        self._quiet = 0

    def reset(self) -> None:
        self.close()
        self.floor_db = None
        self._pending = np.zeros(0, dtype=np.float32)


class SileroGate:
    """Silero VAD as a gate: open while the detector is inside a speech segment."""

    def __init__(self, settings: GateSettings, model: Path | str | None = None) -> None:
        path = model or settings.silero_model
        if path is None:
            raise ConfigError(
                "wake.gate.silero_model: kind silero needs the path of silero_vad.onnx "
                "(`assistant models fetch vad-silero` installs it under <models_dir>/vad-silero/)"
            )
        self._vad_settings = VadSettings(
            model=Path(path),
            threshold=settings.silero_threshold,
            min_silence_s=settings.hang_s,
            min_speech_s=0.25,
            max_speech_s=1e6,
        )
        # Finished segments are dropped at once; the buffer holds the segment still open.
        self._vad = make_vad(self._vad_settings, buffer_s=30.0)
        self.is_open = False

    def update(self, samples: np.ndarray) -> bool:
        feed(self._vad, samples)
        self.is_open = bool(self._vad.is_speech_detected())
        while not self._vad.empty():
            self._vad.pop()
        return self.is_open

    def close(self) -> None:
        self._vad.reset()
        self.is_open = False

    def reset(self) -> None:
        self.close()


class Gate(Protocol):
    is_open: bool

    def update(self, samples: np.ndarray) -> bool: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...


def make_gate(settings: GateSettings) -> Gate:
    if settings.kind == "silero":
        return SileroGate(settings)
    return EnergyGate(settings)


class GatedWakeWord:
    """A Spotter (like WakeWord) that feeds the spotter only while the gate is open.

    Chunks are passed to the spotter as they came (same `t`), so detection times stay those of the input.
    Two things make the gated spotter decide exactly as the ungated one (tests/test_gate.py, recall parity):
    - On close the spotter's stream is reset, so the next opening starts it as at the start of a file, on
      pre-roll audio that is mostly room noise, instead of splicing new speech onto old state.
    - The replayed pre-roll starts on the spotter's chunk grid (`align_s`: the streaming encoder consumes
      320 ms chunks), i.e. at a multiple of align_s after where an ungated stream would have started. With
      an arbitrary start, borderline keywords flipped (豪猪 fired instead of 周望军 on test_wavs/5.wav),
      whatever the pre-roll length; aligned, the encoder sees the very same chunks as the ungated one.
    """

    def __init__(
        self,
        wake: Spotter,
        gate: Gate,
        pre_roll_s: float = 0.8,
        reset_on_close: bool = True,
        align_s: float = 0.32,
    ) -> None:
        self.wake = wake
        self.gate = gate
        self.pre_roll_s = pre_roll_s
        self.reset_on_close = reset_on_close
        self._align = int(round(align_s * SAMPLE_RATE))
        self._pre_roll = int(round(pre_roll_s * SAMPLE_RATE))
        self._ring: collections.deque[Any] = collections.deque()
        self._ring_samples = 0
        self._open = False
        self._admitted_open = False  # the gate's verdict on the chunk admit() last let through
        self._seen = 0  # samples accepted since reset(): where an ungated spotter's stream started
        self._fed = 0  # samples fed to the spotter's current stream
        self.openings = 0  # how many times the gate opened (for logs and benchmarks)
        self.fed_s = 0.0  # seconds of audio the spotter actually processed, over the whole life

    def accept(self, chunk: Any) -> Any:
        return self.spot(chunk) if self.admit(chunk) else None

    def admit(self, chunk: Any) -> bool:
        """The gate's half of accept(), cheap enough for the event loop: True when the spotter must see
        `chunk` (call spot(chunk) next, with that same chunk); False when the gate stayed closed, the chunk
        went into the pre-roll ring and nothing can fire."""
        is_open = self.gate.update(chunk.samples)
        if not self._open and not is_open:
            self._remember(chunk)
            self._seen += len(chunk.samples)
            return False
        self._admitted_open = is_open
        return True

    def spot(self, chunk: Any) -> Any:
        """The spotter's half of accept() for a chunk admit() let through: the model's work (the pool's job)."""
        is_open = self._admitted_open
        detection = None
        if not self._open:
            self.openings += 1
            backlog = self._take_pre_roll(chunk)  # ends with this chunk, or its tail from the grid on
            pre_roll = sum(len(c.samples) for c in backlog[:-1]) / SAMPLE_RATE
            log.debug("gate open at t=%.2f s (pre-roll %.2f s)", chunk.t, pre_roll)
            for old in backlog:
                detection = self._feed(old) or detection
        else:
            detection = self._feed(chunk)
        self._seen += len(chunk.samples)
        self._open = is_open
        if not is_open:
            log.debug("gate closed at t=%.2f s", chunk.t)
            if self.reset_on_close:
                self._restart_stream()
        return detection

    def _take_pre_roll(self, chunk: Any) -> list[Any]:
        """The ring's chunks and then `chunk` (the one that opened the gate), from the aligned pre-roll start on
        (the first one cut), and empty the ring.

        The aligned start may lie past the ring's end, inside `chunk`, when the gate reopens a moment after
        closing (the ring is shorter than one grid step): `chunk` is then cut too, so where the stream starts
        does not depend on how the input is cut into chunks (audio.block_ms). Only when no grid point lies in
        the audio at hand does the stream start unaligned, at `chunk`."""
        backlog = [*self._ring, chunk]
        self._ring.clear()
        self._ring_samples = 0
        ring_start = self._seen - sum(len(c.samples) for c in backlog[:-1])
        end = self._seen + len(chunk.samples)
        start = max(ring_start, self._seen - self._pre_roll)
        if self._align:
            # The next sample fed is sample `_fed` of the stream; an ungated stream would see it as sample
            # `start`: both must sit at the same place in a chunk.
            phase = self._fed % self._align
            offset = (start - phase) % self._align
            start = start - offset if start - offset >= ring_start else start + (self._align - offset)
            if start >= end:
                start = self._seen
        out = []
        position = ring_start
        for old in backlog:
            n = len(old.samples)
            if position + n > start:
                cut = max(0, start - position)
                out.append(old if cut == 0 else _tail(old, cut))
            position += n
        return out

    def _feed(self, chunk: Any) -> Any:
        self._fed += len(chunk.samples)
        self.fed_s += len(chunk.samples) / SAMPLE_RATE
        return self.wake.accept(chunk)

    def _remember(self, chunk: Any) -> None:
        self._ring.append(chunk)
        self._ring_samples += len(chunk.samples)
        limit = self._pre_roll + self._align
        # Keep whole chunks, dropping the oldest while the rest still covers pre-roll plus one grid step.
        while self._ring and self._ring_samples - len(self._ring[0].samples) >= limit:
            self._ring_samples -= len(self._ring.popleft().samples)

    def fork(self) -> Any:
        """The spotter behind the gate with its own stream: a network client's audio is not gated."""
        return self.wake.fork()

    def _restart_stream(self) -> None:
        self.wake.reset()
        self._fed = 0

    def reset(self) -> None:
        """Back to idle: fresh spotter stream, closed gate (the learned noise floor is kept), empty ring."""
        self._restart_stream()
        self._seen = 0
        self.gate.close()
        self._open = False
        self._ring.clear()
        self._ring_samples = 0

    @property
    def labels(self) -> list[str]:
        return self.wake.labels

    @property
    def in_speech(self) -> bool:
        """The gate is open: someone may be in the middle of a phrase (a reload waits for this to end)."""
        return self._open

    @property
    def stop_labels(self) -> list[str]:
        return getattr(self.wake, "stop_labels", [])

    @property
    def barge_in(self) -> Any:
        """The barge-in spotter of the spotter behind the gate; it runs ungated (a live reply is no quiet room)."""
        return getattr(self.wake, "barge_in", None)

    @property
    def decode_s(self) -> float:
        return self.wake.decode_s

    def flush(self) -> Any:
        """End of input: let the spotter finish a keyword at the very end (nothing is pending if closed)."""
        return self.wake.flush() if self._open else None


def _tail(chunk: Any, cut: int) -> Any:
    """`chunk` without its first `cut` samples, its `t` moved accordingly."""
    return dataclasses.replace(chunk, samples=chunk.samples[cut:], t=chunk.t + cut / SAMPLE_RATE)


def gated(wake: Spotter, settings: GateSettings) -> Spotter:
    """The wake word the daemon should use: `wake` itself when the gate is disabled."""
    if not settings.enabled:
        return wake
    return GatedWakeWord(wake, make_gate(settings), pre_roll_s=settings.pre_roll_s)
