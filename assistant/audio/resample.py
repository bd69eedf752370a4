"""Sample-rate conversion and downmixing at the edge, so every model sees 16 kHz mono."""

from __future__ import annotations

import math

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE
from assistant.errors import AudioError

MIN_RATE = 4_000  # Hz: below this nothing of speech is left; a header saying 1 Hz is corrupt, not slow audio
MAX_RATE = 384_000  # Hz: the highest rate sound cards and WAV writers use
MAX_WEIGHTS = 1 << 18  # filter values in the phase table (1 MiB of float32), whatever the ratio


def check_rate(rate: int, what: str = "sample rate") -> int:
    """`rate` as an int if it is in [MIN_RATE, MAX_RATE], else AudioError naming `what`."""
    if not MIN_RATE <= int(rate) <= MAX_RATE:
        raise AudioError(f"{what} {int(rate)} Hz out of range: expected {MIN_RATE}-{MAX_RATE} Hz")
    return int(rate)


class Resampler:
    """Streaming windowed-sinc (polyphase) resampler between two integer rates.

    Written here rather than imported: scipy is not a runtime dependency on a Pi, and linear interpolation
    aliases everything above 8 kHz of a 44.1/48 kHz input into the speech band the models listen to. For a
    rational ratio up/down the filter has only `up` phases, so the weights are precomputed once; a 100 ms
    block costs ~1600 x 2*half_width multiply-adds.

    Memory and time are bounded whatever the rates: both must lie in [MIN_RATE, MAX_RATE] (AudioError
    otherwise), which bounds the taps (at most ~400 each side), and where the exact phase table would exceed
    MAX_WEIGHTS values (16000/44101 has 16000 phases; a header of 0x7fffffff Hz once asked for 539 GiB) the
    table holds a grid of MAX_WEIGHTS / (2*taps) phases (over 300) and each output's weights are interpolated
    linearly between its two neighbours. That moves an output by well under 1e-3 of an input sample, far below
    what 16 kHz speech can show; computing exact weights per output instead cost 20x real time at 383999 Hz.
    Every rate in real use (8, 11.025, 22.05, 32, 44.1, 48, 96, 192 kHz ...) gets the exact table.
    """

    def __init__(self, in_rate: int, out_rate: int, *, half_width: int = 16):
        self.in_rate, self.out_rate = check_rate(in_rate, "input sample rate"), check_rate(out_rate, "output rate")
        g = math.gcd(self.in_rate, self.out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        # cutoff relative to the input Nyquist; 0.95 leaves room for the window's transition band
        self._cutoff = min(1.0, self.up / self.down) * 0.95
        self._taps = int(math.ceil(half_width / self._cutoff))  # input samples each side of an output
        self._offsets = np.arange(-self._taps + 1, self._taps + 1)  # tap k = base + offset
        width = len(self._offsets)
        self._slice = max(1, min(4096, MAX_WEIGHTS // width))  # outputs computed per step
        self._grid: int | None = None  # None: one table row per phase; else rows at k/_grid, interpolated
        if self.up * width <= MAX_WEIGHTS:
            self._weights = self._phase_weights(np.arange(self.up) / self.up)
        else:
            self._grid = MAX_WEIGHTS // width - 1
            self._weights = self._phase_weights(np.arange(self._grid + 1) / self._grid)
        self._buf = np.zeros(self._taps, dtype=np.float32)  # zeros before the first input sample
        self._buf_start = -self._taps  # absolute input index of _buf[0]
        self._n = 0  # next output index
        self._n_in = 0

    def _phase_weights(self, frac: np.ndarray) -> np.ndarray:
        """Filter weights [len(frac), 2*taps] for outputs at fractional positions `frac` (0..1) past their base."""
        x = frac[:, None] - self._offsets[None, :]
        window = np.where(np.abs(x) < self._taps, 0.5 + 0.5 * np.cos(np.pi * x / self._taps), 0.0)
        weights = self._cutoff * np.sinc(self._cutoff * x) * window
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)  # unit DC gain

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def process(self, x: np.ndarray, *, final: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.passthrough:
            return x
        self._n_in += len(x)
        buf = np.concatenate([self._buf, x])
        if final:
            buf = np.concatenate([buf, np.zeros(self._taps, dtype=np.float32)])
        buf_end = self._buf_start + len(buf)  # one past the last absolute input index held
        last_base = buf_end - 1 - self._taps  # an output needs input up to base + taps
        n_stop = -((-(last_base + 1) * self.up) // self.down)  # first n whose base exceeds last_base
        if final:
            n_stop = min(n_stop, -((-self._n_in * self.up) // self.down))
        out = np.zeros(0, dtype=np.float32)
        if n_stop > self._n:
            n = np.arange(self._n, n_stop, dtype=np.int64)
            base = (n * self.down) // self.up
            phase = (n * self.down) % self.up
            out = np.empty(len(n), dtype=np.float32)
            # in slices, so a long input does not build one huge index matrix
            step = self._slice
            for i in range(0, len(n), step):
                idx = base[i : i + step, None] + self._offsets[None, :] - self._buf_start
                p = phase[i : i + step]
                if self._grid is None:
                    weights = self._weights[p]
                else:  # between grid rows k and k+1; each row sums to 1, so the blend does too
                    pos = p * (self._grid / self.up)
                    k = np.minimum(pos.astype(np.int64), self._grid - 1)
                    a = (pos - k).astype(np.float32)[:, None]
                    weights = self._weights[k] * (1 - a) + self._weights[k + 1] * a
                out[i : i + step] = np.einsum("ij,ij->i", buf[idx], weights)
            self._n = n_stop
        keep_from = (self._n * self.down) // self.up - self._taps + 1 - self._buf_start
        keep_from = max(0, min(keep_from, len(buf)))
        self._buf = buf[keep_from:]
        self._buf_start += keep_from
        return out


def resample(x: np.ndarray, in_rate: int, out_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole signal (convenience for tests and one-shot use)."""
    return Resampler(in_rate, out_rate).process(x, final=True)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Frames x channels (or 1-D) -> float32 mono by averaging channels."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
