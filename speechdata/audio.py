"""Test audio as float32 mono 16 kHz arrays: shared clips, silence, pink room noise, gain, SNR, chunks, bytes."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from speechdata.assets import JFK, WAKE_HEAD_S

SAMPLE_RATE = 16000
BLOCK = 1600  # samples per 100 ms chunk, the daemon's default block


@functools.lru_cache(maxsize=64)
def _load(path: str) -> np.ndarray:
    from assistant.audio.resample import resample, to_mono

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    samples = resample(to_mono(data), rate, SAMPLE_RATE).astype(np.float32)
    samples.setflags(write=False)  # cached and shared: callers copy before changing it
    return samples


def load_clip(path: Path) -> np.ndarray:
    """A clip as float32 mono 16 kHz, converted by the daemon's own resampler (cached, read-only).

    The one way tests and benchmarks read a clip, so a clip is the same samples the daemon hears from a file.
    """
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


def pink_noise(
    seconds: float, dbfs: float, seed: np.random.Generator | int = 0, *, drift_db: float = 0.0
) -> np.ndarray:
    """1/f ("room tone") noise with RMS `dbfs`, shaped in the frequency domain (no filter state to carry).

    `seed`: an int, or a Generator whose stream goes on (as np.random.default_rng takes). `drift_db` adds a
    slow (~23 s period) level wander of that many dB, like a real room.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0  # no DC blow-up
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise *= 10 ** (dbfs / 20) / max(np.sqrt(np.mean(noise**2)), 1e-12)
    if drift_db:
        t = np.arange(n) / SAMPLE_RATE
        noise *= 10 ** (drift_db * np.sin(2 * np.pi * t / 23.0 + rng.uniform(0, 6.28)) / 20)
    return noise.astype(np.float32)


def at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` plus `noise` scaled so speech RMS / noise RMS is `snr_db` (noise cut or looped to length)."""
    noise = np.resize(noise, len(speech)).astype(np.float64)
    scale = 10 ** ((rms_dbfs(speech) - snr_db - rms_dbfs(noise)) / 20)
    return (speech + scale * noise).astype(np.float32)


def chunks(audio: np.ndarray, block: int = BLOCK) -> Iterator[object]:
    """`audio` as the daemon's AudioChunks of `block` samples (the last one may be shorter)."""
    from assistant.audio.chunk import AudioChunk

    for i in range(0, len(audio), block):
        yield AudioChunk(samples=audio[i : i + block], t=i / SAMPLE_RATE)


def write_wav(path: Path, *parts: np.ndarray) -> Path:
    """The parts back to back as a 16-bit WAV file."""
    sf.write(str(path), np.clip(np.concatenate(parts), -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return path


def wav_bytes(samples: np.ndarray, *, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """A real audio file's bytes (for header fuzzing and stdin tests)."""
    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLE_RATE, subtype=subtype, format=fmt)
    return buf.getvalue()


def pcm16(samples: np.ndarray) -> bytes:
    """Raw signed 16-bit little-endian PCM, what `--input -` reads."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
