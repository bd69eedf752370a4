"""Recordings for wake-word tuning: the user's positives and negatives, or synthetic ones when there are none.

Positives are recordings of each phrase, 3-5 per label: `DIR/LABEL/*.wav`, `DIR/LABEL-anything.wav`, or a TSV
of `file<TAB>label` lines. Negatives are folders of audio in which no keyword is said. Synthetic positives are
what wake-word trainers make: the phrase spoken by a TTS in several voices and speeds, mixed with room noise at
several signal-to-noise ratios.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from assistant.audio.chunk import SAMPLE_RATE
from assistant.audio.resample import resample, to_mono
from assistant.errors import ConfigError
from assistant.wake.tuning import Clip

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_RATE = 16000  # below this the recording lacks the band the model listens to: upsampling cannot restore it

# A TTS: (text, voice, speed multiplier) -> float32 mono samples at 16 kHz.
Speak = Callable[[str, str, float], np.ndarray]


def label_key(label: str) -> str:
    """Labels compare case-insensitively, with spaces, '-' and '_' alike (file names cannot hold every label)."""
    return "_".join(label.replace("-", " ").replace("_", " ").lower().split())


def read_clip(path: Path, label: str | None = None) -> Clip:
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise ConfigError(f"{path}: cannot read audio: {exc}") from None
    if rate < MIN_RATE:
        raise ConfigError(f"{path}: sample rate {rate} Hz is too low: record at 16000 Hz or more")
    samples = resample(to_mono(data), rate, SAMPLE_RATE)
    if len(samples) < SAMPLE_RATE // 4:
        raise ConfigError(f"{path}: {len(samples) / SAMPLE_RATE:.2f} s of audio is too short for a keyword")
    return Clip(name=str(path), samples=np.ascontiguousarray(samples, dtype=np.float32), label=label)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def load_positives(source: Path, labels: Sequence[str]) -> list[Clip]:
    """Recordings per label from a folder or a TSV; every label needs at least one (an error names it)."""
    by_key = {label_key(label): label for label in labels}
    pairs: list[tuple[Path, str]] = []
    if source.is_file():
        for line_no, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ConfigError(f"{source}:{line_no}: expected `file<TAB>label`, got {line[:80]!r}")
            key = label_key(parts[1])
            if key not in by_key:
                raise ConfigError(f"{source}:{line_no}: label {parts[1]!r} is not in the keywords file "
                                  f"(labels: {', '.join(labels)})")
            path = Path(parts[0])
            pairs.append((path if path.is_absolute() else source.parent / path, by_key[key]))
    elif source.is_dir():
        files = _audio_files(source)
        if not files:
            raise ConfigError(f"positives folder {source} has no audio files ({', '.join(AUDIO_SUFFIXES)})")
        for path in files:
            relative = path.relative_to(source)
            name = relative.parts[0] if len(relative.parts) > 1 else path.stem
            key = next((k for k in sorted(by_key, key=len, reverse=True) if label_key(name).startswith(k)), None)
            if key is None:
                log.warning("%s: no keyword label matches its name; skipped", path)
                continue
            pairs.append((path, by_key[key]))
    else:
        raise ConfigError(f"positives {source} not found (a folder of recordings or a TSV)")
    clips = [read_clip(path, label) for path, label in pairs]
    missing = [label for label in labels if not any(c.label == label for c in clips)]
    if missing:
        raise ConfigError(f"positives {source}: no recordings for {', '.join(missing)} (name them LABEL/*.wav or "
                          "LABEL-1.wav, or list them in a TSV)")
    return clips


def load_negatives(folders: Sequence[Path]) -> list[Clip]:
    clips: list[Clip] = []
    for folder in folders:
        if not folder.exists():
            raise ConfigError(f"negatives {folder} not found")
        files = [folder] if folder.is_file() else _audio_files(folder)
        if not files:
            raise ConfigError(f"negatives folder {folder} has no audio files ({', '.join(AUDIO_SUFFIXES)})")
        clips.extend(read_clip(path) for path in files)
    return clips


def pink_noise(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """1/f room tone with RMS `dbfs`."""
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    noise *= 10 ** (dbfs / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
    return noise.astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    speech_rms = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) + 1e-12
    noise_rms = np.sqrt(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    gain = speech_rms / (noise_rms * 10 ** (snr_db / 20))
    return np.clip(speech + gain * noise[: len(speech)], -1.0, 1.0).astype(np.float32)


def synthetic_positives(
    phrases: dict[str, str],
    speak: Speak,
    voices: Sequence[str],
    *,
    speeds: Sequence[float] = (0.85, 1.0, 1.2),
    snrs_db: Sequence[float | None] = (None, 20.0, 10.0),
    seed: int = 0,
) -> list[Clip]:
    """Each label's phrase in every voice x speed, each with room noise at every SNR (None: clean), with half a
    second of room tone around it (the spotter needs trailing audio to report a keyword)."""
    rng = np.random.default_rng(seed)
    clips = []
    for label, phrase in phrases.items():
        for voice in voices:
            for speed in speeds:
                spoken = speak(phrase, voice, speed)
                pad = np.zeros(SAMPLE_RATE // 2, np.float32)
                padded = np.concatenate([pad, spoken, pad])
                for snr in snrs_db:
                    noisy = padded if snr is None else mix_at_snr(padded, pink_noise(len(padded) / SAMPLE_RATE,
                                                                                    -40, rng), snr)
                    name = f"synthetic:{label}:{voice}:{speed:g}:{'clean' if snr is None else f'{snr:g}dB'}"
                    clips.append(Clip(name=name, samples=noisy, label=label))
    return clips


# Default negatives when the user gives none: everyday sentences a TTS reads (none of them a usual wake word),
# plus quiet and louder room tone. Few minutes, so the false-alarm rate it gives is a coarse first check.
NEGATIVE_TEXT = {
    "en": [
        "The weather tomorrow will be cloudy with a chance of rain in the afternoon.",
        "Please remember to buy milk, bread and some apples on the way home.",
        "The meeting has been moved to Thursday at half past three.",
        "She read the book in one evening and then started it again.",
        "Turn left at the second traffic light and park behind the library.",
        "Our train was late again, so we had coffee at the station.",
        "The children built a small boat out of paper and sticks.",
        "Dinner is ready, could you set the table and call everyone?",
    ],
    "zh": [
        "明天下午可能会下雨，出门记得带伞。",
        "我们周四下午三点半开会，请大家准时参加。",
        "这本书我一个晚上就看完了，写得非常好。",
        "回家的路上顺便买点牛奶和面包。",
        "孩子们用纸和木棍做了一条小船。",
        "晚饭做好了，大家快来吃饭吧。",
    ],
}


def synthetic_negatives(language: str, speak: Speak, voices: Sequence[str], *, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    clips = []
    for voice in voices:
        for i, sentence in enumerate(NEGATIVE_TEXT.get(language, NEGATIVE_TEXT["en"])):
            clips.append(Clip(name=f"synthetic-negative:{voice}:{i}", samples=speak(sentence, voice, 1.0)))
    clips.append(Clip(name="room-tone:-55dBFS", samples=pink_noise(60.0, -55, rng)))
    clips.append(Clip(name="room-tone:-35dBFS", samples=pink_noise(60.0, -35, rng)))
    return clips
