"""Audio at the network edge: whatever rate, sample width and channel count a client sends becomes the
pipeline's float32 mono 16 kHz, or a clear error naming what was wrong."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from assistant.audio.chunk import SAMPLE_RATE
from assistant.audio.resample import resample, to_mono

MAX_RATE = 192_000
WIDTHS = {1: np.uint8, 2: np.int16, 4: np.int32}  # Wyoming widths (bytes per sample) we accept


class BadAudio(ValueError):
    """Audio the server cannot use; the message says why (for a 400 or a Wyoming error event)."""


def check_format(rate: object, width: object, channels: object) -> tuple[int, int, int]:
    """Validate a PCM format (Wyoming audio-start / audio-chunk fields)."""
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= MAX_RATE:
        raise BadAudio(f"rate {rate!r} not supported: expected samples per second in 1000..{MAX_RATE}")
    if width not in WIDTHS:
        raise BadAudio(f"width {width!r} not supported: expected bytes per sample 1, 2 or 4")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
        raise BadAudio(f"channels {channels!r} not supported: expected 1..8")
    return rate, int(width), channels  # type: ignore[arg-type]


def pcm_to_float(payload: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM -> float32 mono at the same rate (a trailing partial frame is dropped)."""
    frame = width * channels
    usable = len(payload) - len(payload) % frame
    data = np.frombuffer(payload[:usable], dtype=np.dtype(WIDTHS[width]).newbyteorder("<"))
    if width == 1:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    else:
        samples = data.astype(np.float32) / float(2 ** (8 * width - 1))
    return to_mono(samples.reshape(-1, channels))


def to_pipeline_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    return samples if rate == SAMPLE_RATE else resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def decode_file(data: bytes, *, max_seconds: float) -> np.ndarray:
    """A WAV/FLAC/OGG file's bytes -> float32 mono 16 kHz."""
    if not data:
        raise BadAudio("file is empty: send a WAV or FLAC file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames > max_seconds * f.samplerate:
                raise BadAudio(f"audio of {f.frames / f.samplerate:.1f} s is longer than servers.limits.max_audio_s "
                               f"= {max_seconds:g} s")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except BadAudio:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise BadAudio(f"cannot decode the audio file ({exc}): send WAV or FLAC") from None
    if len(samples) == 0:
        raise BadAudio("the audio file holds no samples")
    mono = np.nan_to_num(to_mono(samples))
    return to_pipeline_rate(mono, rate)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of float samples."""
    out = io.BytesIO()
    sf.write(out, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
