"""Build test audio from the shared real clips: silence, pink room noise, planted wake phrases, speech.

Everything is float32 mono at 16 kHz. A `Mix` appends parts and remembers what each one was (`Segment`), so
a test can score the daemon's events against the plan: which wake phrase was planted where, how many
seconds of the mix were speech that must not wake the assistant. `chunks_of(segments)` streams a plan of
any length as 100 ms chunks without ever holding the whole mix (the soak runs hours of it).

The English wake phrase is the start of the JFK clip, "And so, my fellow Americans," (it fires FELLOW
AMERICANS on the English KWS model); an utterance is spliced straight after it, as someone would say it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import ASSETS

SAMPLE_RATE = 16000
BLOCK = 1600  # samples per 100 ms chunk, the daemon's default block

AUDIO = ASSETS / "audio"
KWS_EN = ASSETS / "kws" / "en-gigaspeech-3.3M-mobile"
KWS_ZH = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile"
JFK = AUDIO / "en" / "whisper-jfk.flac"
WAKE_LABEL = "FELLOW AMERICANS"
WAKE_HEAD_S = 3.0  # "And so, my fellow Americans," ends before 3.0 s of the JFK clip; "ask" starts after it

# English clips said after the wake phrase (none contains it).
UTTERANCE_CLIPS: tuple[Path, ...] = (
    AUDIO / "en" / "picovoice-leopard-test.wav",
    AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav",
    AUDIO / "en" / "lhotse-librispeech-2412-153948-0000.flac",
    AUDIO / "en" / "lhotse-librispeech-2412-153948-0001.flac",
    AUDIO / "en" / "lhotse-ljspeech-LJ002-0020.wav",
    AUDIO / "en" / "lhotse-ljspeech-LJ002-0035.wav",
)
# Speech that must never wake the English model: every shared clip but JFK, both languages.
NON_WAKE_CLIPS: tuple[Path, ...] = (
    *UTTERANCE_CLIPS,
    AUDIO / "en" / "porcupine-porcupine.wav",
    AUDIO / "zh" / "funasr-asr_example.wav",
    AUDIO / "zh" / "porcupine-haozhu.wav",
    AUDIO / "zh" / "wenet-aishell-BAC009S0724W0121.wav",
    *(KWS_ZH / "test_wavs" / f"{i}.wav" for i in range(7)),
)


@functools.lru_cache(maxsize=64)
def _load(path: str) -> np.ndarray:
    from assistant.audio.resample import resample, to_mono

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    samples = resample(to_mono(data), rate, SAMPLE_RATE).astype(np.float32)
    samples.setflags(write=False)  # cached and shared: callers copy before changing it
    return samples


def load_clip(path: Path) -> np.ndarray:
    """A shared clip as float32 mono 16 kHz (converted with the daemon's own resampler; cached, read-only)."""
    return _load(str(path))


def wake_phrase() -> np.ndarray:
    """'And so, my fellow Americans,' from the JFK clip."""
    return load_clip(JFK)[: int(WAKE_HEAD_S * SAMPLE_RATE)]


def jfk_question() -> np.ndarray:
    """The rest of the JFK clip: 'ask not what your country can do for you, ...'."""
    return load_clip(JFK)[int(WAKE_HEAD_S * SAMPLE_RATE) :]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.float32)


def rms_dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def at_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return (x * np.float32(10 ** (gain_db / 20))).astype(np.float32)


def pink_noise(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """1/f ("room tone") noise with RMS `dbfs`, shaped in the frequency domain (no filter state to carry)."""
    n = int(round(seconds * SAMPLE_RATE))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0  # no DC blow-up
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise *= 10 ** (dbfs / 20) / max(np.sqrt(np.mean(noise**2)), 1e-12)
    return noise.astype(np.float32)


@dataclass(frozen=True)
class Segment:
    """One planned part of a mix. `kind`: wake (planted wake phrase), utterance (said after a wake),
    speech (must not wake), silence, noise."""

    kind: str
    name: str
    samples: np.ndarray = field(repr=False)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Placed:
    """A segment's place in the mix, in seconds of input audio."""

    kind: str
    name: str
    start: float
    end: float


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
        start, end = self._n / SAMPLE_RATE, (self._n + len(samples)) / SAMPLE_RATE
        placed = Placed(segment.kind, segment.name, start, end)
        self.parts.append(np.asarray(samples, dtype=np.float32))
        self.placed.append(placed)
        self._n += len(samples)
        return placed

    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)

    def write(self, path: Path) -> Path:
        sf.write(str(path), np.clip(self.audio(), -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        return path


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
        yield segment, Placed(segment.kind, segment.name, n / SAMPLE_RATE, end / SAMPLE_RATE)
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


def wav_bytes(samples: np.ndarray, *, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """A real audio file's bytes (for header fuzzing and stdin tests)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLE_RATE, subtype=subtype, format=fmt)
    return buf.getvalue()


def pcm16(samples: np.ndarray) -> bytes:
    """Raw signed 16-bit little-endian PCM, what `--input -` reads."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
