"""Acoustic echo cancellation of our own voice: Speex's MDF echo canceller (Debian's libspeexdsp, through the
`speexdsp` Python binding), fed the TTS output as the reference.

Status: experimental, off by default (tts.echo_cancel). Offline, with the reference aligned by construction, it
does what is described below; inside the daemon, fed the paced output slices stamped with the audio clock, the
simulated-room test removes only 2-4 dB of echo (tests/test_bargein.py, xfail): the reference and the echo
agree on a ~74 ms lag, but not yet sample-exactly; finding out why is the next step.

Why Speex: measured with bench/bargein.py on the simulated room (50 ms, -6 dB, RT60 0.25 s) it takes ~26 dB
of echo out at ~3% of a core, and lifts the spotter's recall of a phrase said over the echo from 0 to 100 % at
0 dB speech-to-echo. The WebRTC module's binding (`aec-audio-processing`) builds WebRTC from source: too heavy
for a Pi install; speexdsp builds in seconds against the Debian package (`apt-get install libspeexdsp-dev
swig`, then `pip install edge-assistant[aec]`). Without it the daemon falls back to the hold-off and the text
check (daemon.py).

The reference is kept by input sample position: the output reports each slice as it starts playing, stamped
with the input time of that moment (the daemon's audio clock), and `process` subtracts the echo of the slices
that were playing during an input chunk. Alignment within the canceller's filter (256 ms) is enough: the
adaptive filter finds the room's delay itself.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.audio.resample import resample

log = logging.getLogger(__name__)

FRAME = 160  # 10 ms frames
FILTER = 4096  # 256 ms of echo path
KEEP_S = 30.0  # seconds of reference kept
CONTIGUOUS_S = 0.03  # a slice stamped within this of the previous one's end continues it


def available() -> bool:
    try:
        import speexdsp  # noqa: F401
    except ImportError:
        return False
    return True


class EchoCanceller:
    """Holds the played reference and cancels it out of input chunks (thread-safe: TTS thread vs loop)."""

    def __init__(self) -> None:
        import speexdsp

        self._ec = speexdsp.EchoCanceller.create(FRAME, FILTER, SAMPLE_RATE)
        self._lock = threading.Lock()
        self._ref = np.zeros(int(KEEP_S * SAMPLE_RATE), dtype=np.float32)
        self._base = 0  # input sample position of self._ref[0]
        self._pending = np.zeros(0, dtype=np.float32)  # input samples not yet a whole frame
        self._pending_ref = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        self.active_until = 0.0  # input time up to which reference audio exists
        self._next = -1_000_000  # input sample where the last played slice ended

    def played(self, samples: np.ndarray, rate: int, input_t: float) -> None:
        """`samples` start playing at input time `input_t`."""
        x = resample(samples.astype(np.float32), rate, SAMPLE_RATE) if rate != SAMPLE_RATE else samples
        start = int(round(input_t * SAMPLE_RATE))
        with self._lock:
            # A slice that follows the previous one goes right after it: a sound card plays them back to back,
            # and the wall-clock stamps jitter by samples, which the adaptive filter cannot follow (measured:
            # 2-4 dB of echo removed with stamped slices, ~20 dB back to back).
            if abs(start - self._next) <= CONTIGUOUS_S * SAMPLE_RATE:
                start = self._next
            self._next = start + len(x)
            self._slide(start + len(x))
            i = start - self._base
            if i < 0:
                x, i = x[-i:], 0
            self._ref[i : i + len(x)] += x
            self.active_until = max(self.active_until, (start + len(x)) / SAMPLE_RATE)

    def _slide(self, end: int) -> None:
        over = end - (self._base + len(self._ref))
        if over > 0:
            self._ref = np.roll(self._ref, -over)
            self._ref[-over:] = 0.0
            self._base += over

    def process(self, chunk: AudioChunk) -> AudioChunk:
        """The chunk with the echo of our own output taken out (whole 10 ms frames; the rest next time)."""
        start = int(round(chunk.t * SAMPLE_RATE))
        with self._lock:
            self._slide(start + len(chunk.samples))
            i = start - self._base
            ref = self._ref[max(0, i) : i + len(chunk.samples)]
            if len(ref) < len(chunk.samples):
                ref = np.concatenate([np.zeros(len(chunk.samples) - len(ref), np.float32), ref])
        mic = np.concatenate([self._pending, chunk.samples])
        far = np.concatenate([self._pending_ref, ref])
        whole = len(mic) // FRAME * FRAME
        m16 = (np.clip(mic[:whole], -1, 1) * 32767).astype(np.int16)
        r16 = (np.clip(far[:whole], -1, 1) * 32767).astype(np.int16)
        out = np.empty(whole, dtype=np.float32)
        for j in range(0, whole, FRAME):
            frame = self._ec.process(m16[j : j + FRAME].tobytes(), r16[j : j + FRAME].tobytes())
            out[j : j + FRAME] = np.frombuffer(frame, np.int16) / 32767.0
        t0 = chunk.t - len(self._pending) / SAMPLE_RATE
        self._pending, self._pending_ref = mic[whole:], far[whole:]
        return AudioChunk(out, t0)
