"""Text to speech and audio out: sherpa-onnx OfflineTts with a configured voice, a Piper voice (piper_voice.py),
or the system's espeak-ng.

Everything here blocks (synthesis and playback), so the daemon calls it through its executor. Engines are
chosen once at start: a configured-but-missing voice is a ModelError then, not a surprise mid-reply.
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from assistant.errors import AudioError, ConfigError, ModelError
from assistant.settings import TtsSettings

log = logging.getLogger(__name__)

ESPEAK_WPM = 175  # espeak-ng's default rate in words per minute; tts.speed scales it


class Synthesizer(Protocol):
    name: str

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """float32 mono samples in [-1, 1] and their sample rate in Hz."""
        ...


STOP_SLICE_S = 0.02  # paced outputs write in slices this long, so a stop is heard within one slice


class AudioOutput(Protocol):
    def play(self, samples: np.ndarray, sample_rate: int, stop: threading.Event | None = None) -> None:
        """Play (or store) the samples; returns when they have been played, or soon after `stop` is set."""
        ...

    def close(self) -> None: ...


def _require_file(path: Path | None, key: str) -> str:
    if path is None:
        raise ConfigError(f"tts.{key}: required for tts.engine sherpa with this model_type")
    if not path.exists():
        raise ModelError(f"tts.{key}: {path} not found; fetch a voice (e.g. `assistant models fetch tts-en`) "
                         "and point tts.* at its files")
    return str(path)


def _optional(path: Path | None, key: str) -> str:
    return _require_file(path, key) if path is not None else ""


def _text_files(s: TtsSettings) -> dict[str, str]:
    """The tokens, lexicon and data folders every sherpa-onnx voice config takes (checked in this order)."""
    return {
        "tokens": _require_file(s.tokens, "tokens"),
        "lexicon": _optional(s.lexicon, "lexicon"),
        "data_dir": _optional(s.data_dir, "data_dir"),
        "dict_dir": _optional(s.dict_dir, "dict_dir"),
    }


class SherpaTts:
    """A sherpa-onnx OfflineTts voice (vits/piper, matcha or kokoro)."""

    name = "sherpa"

    def __init__(self, settings: TtsSettings) -> None:
        import sherpa_onnx

        s = settings
        model_config = sherpa_onnx.OfflineTtsModelConfig(num_threads=s.num_threads, provider="cpu")
        # Each model type names its main file(s) differently; the text side is the same for all three.
        if s.model_type == "vits":
            model_config.vits = sherpa_onnx.OfflineTtsVitsModelConfig(
                model=_require_file(s.model, "model"), **_text_files(s)
            )
        elif s.model_type == "matcha":
            model_config.matcha = sherpa_onnx.OfflineTtsMatchaModelConfig(
                acoustic_model=_require_file(s.model, "model"), vocoder=_require_file(s.vocoder, "vocoder"),
                **_text_files(s),
            )
        else:
            model_config.kokoro = sherpa_onnx.OfflineTtsKokoroModelConfig(
                model=_require_file(s.model, "model"), voices=_require_file(s.voices, "voices"), **_text_files(s)
            )
        config = sherpa_onnx.OfflineTtsConfig(model=model_config, max_num_sentences=1)
        if not config.validate():
            raise ModelError(f"tts: sherpa-onnx rejected the {s.model_type} voice config (model {s.model}); "
                             "check the tts.* paths")
        self._tts = sherpa_onnx.OfflineTts(config)
        self._speaker_id = s.speaker_id
        self._speed = s.speed

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        audio = self._tts.generate(text, sid=self._speaker_id, speed=self._speed)
        return np.asarray(audio.samples, dtype=np.float32), int(audio.sample_rate)


class EspeakTts:
    """The espeak-ng program: robotic but everywhere (Debian/Raspberry Pi OS package `espeak-ng`)."""

    name = "espeak"

    def __init__(self, settings: TtsSettings, program: str | None = None) -> None:
        found = program or shutil.which("espeak-ng")
        if found is None:
            raise ModelError("tts.engine espeak: the espeak-ng program is not installed "
                             "(`sudo apt-get install espeak-ng`), or set tts.engine to none or sherpa")
        self._program = found
        self._voice = settings.voice
        self._wpm = max(80, round(ESPEAK_WPM * settings.speed))

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        # Text goes on stdin, never argv: a reply starting with "-" must not become an option.
        result = subprocess.run(
            [self._program, "-v", self._voice, "-s", str(self._wpm), "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            detail = result.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError(f"espeak-ng exited with {result.returncode}: {detail}")
        samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
        return samples[:, 0], int(rate)


def make_synthesizer(settings: TtsSettings) -> Synthesizer | None:
    """The configured engine, loaded now; None when tts.engine is none."""
    if settings.engine == "none":
        return None
    if settings.engine == "espeak":
        return EspeakTts(settings)
    if settings.engine == "piper":
        from assistant.reply.piper_voice import PiperTts

        return PiperTts(settings)
    return SherpaTts(settings)


class SpeakerOutput:
    """The default sound device via sounddevice (PortAudio), imported only when speech is first played."""

    def __init__(self, device: int | str | None = None) -> None:
        self._device = device
        # told what starts playing and when (monotonic s): the echo canceller's reference
        self.listener: Callable[[np.ndarray, int, float], None] | None = None

    def play(self, samples: np.ndarray, sample_rate: int, stop: threading.Event | None = None) -> None:
        try:
            import sounddevice
        except OSError as exc:  # PortAudio missing: sounddevice fails at import
            raise AudioError(f"tts.output speaker: cannot load PortAudio ({exc}); install libportaudio2 "
                             "or set tts.output to a .wav file") from None
        if stop is None:
            sounddevice.play(samples, samplerate=sample_rate, device=self._device, blocking=True)
            return
        # Non-blocking play, then wait in short steps so a barge-in stops the sound mid-sentence.
        sounddevice.play(samples, samplerate=sample_rate, device=self._device)
        if self.listener is not None:
            # A new PortAudio stream per sentence: its start is known only to the device latency, so the echo
            # canceller's reference is stamped with the call time (see audio/aec.py on real devices).
            self.listener(samples, sample_rate, time.monotonic())
        deadline = time.monotonic() + len(samples) / sample_rate + 1.0
        while sounddevice.get_stream().active and time.monotonic() < deadline:
            if stop.wait(STOP_SLICE_S):
                sounddevice.stop()
                return
        sounddevice.wait()

    def close(self) -> None:
        pass


class WavFileOutput:
    """Appends all spoken audio to one WAV file (tests, headless demos); paced like a speaker if asked.

    Paced, it plays like a sound card's output stream: a continuous clock of STOP_SLICE_S periods from the first
    sentence on (silence between sentences counts), each slice written one period ahead of when it plays (a
    new sentence, or one whose writer fell behind, starts one whole period after the moment it is written).
    A slice's play time is `clock0 + k * period`, on that grid whatever the thread scheduling: a late writer
    leaves a gap (an underrun), it never squeezes slices together. The echo canceller and the simulated room
    (speechdata/echo_room.py) both place a slice by that time, so they agree sample-exactly; stamps read from
    the wall clock per slice jittered by samples and broke the canceller.
    """

    def __init__(self, path: Path, *, realtime: bool = False) -> None:
        self._path = path
        self._file: sf.SoundFile | None = None
        self._realtime = realtime
        self.written = 0  # samples written while paced
        # told what starts playing and when (monotonic s): the echo canceller's reference
        self.listener: Callable[[np.ndarray, int, float], None] | None = None
        self._clock0: float | None = None  # monotonic time of period 0 of the output clock
        self._next_period = 0  # the first period not yet written

    def _on_write(self, samples: np.ndarray, sample_rate: int, t: float) -> None:
        """Called with each paced slice as it is written, with the monotonic time it starts playing: the echo
        canceller's reference (and tests' room)."""
        if self.listener is not None:
            self.listener(samples, sample_rate, t)

    def play(self, samples: np.ndarray, sample_rate: int, stop: threading.Event | None = None) -> None:
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(self._path, mode="w", samplerate=sample_rate, channels=1,
                                      subtype="PCM_16")
        if sample_rate != self._file.samplerate:
            samples = resample_linear(samples, sample_rate, self._file.samplerate)
        rate = self._file.samplerate
        if not self._realtime:
            self._file.write(samples)
            self._file.flush()
            return
        # Paced like a speaker: a slice is written one period before it plays, so what is in the file at
        # any moment is what a speaker would have played (the barge-in benchmark reads it as the audio clock).
        step = max(1, int(rate * STOP_SLICE_S))
        period = step / rate
        if self._clock0 is None:
            self._clock0 = time.monotonic()
        for i in range(0, len(samples), step):
            if stop is not None and stop.is_set():
                break
            k = self._next_period
            now = time.monotonic()
            if now > self._clock0 + k * period:
                # a new sentence, or the writer fell behind (an underrun): start one whole period ahead, so the
                # echo canceller has the slice before the microphone hears it even if this thread stalls
                k = math.ceil((now - self._clock0) / period) + 1
            self._next_period = k + 1
            self._on_write(samples[i : i + step], rate, self._clock0 + k * period)  # told first: file IO stalls
            self._file.write(samples[i : i + step])
            self._file.flush()
            self.written += len(samples[i : i + step])
            wait = self._clock0 + k * period - time.monotonic()  # the next slice is written as this one plays
            if wait > 0 and (stop.wait(wait) if stop is not None else time.sleep(wait)):
                break
        if stop is None or not stop.is_set():
            # the sentence ends when its last slice has played (a caller times sentences by play())
            wait = self._clock0 + self._next_period * period - time.monotonic()
            if wait > 0 and stop is not None:
                stop.wait(wait)
            elif wait > 0:
                time.sleep(wait)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def resample_linear(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear interpolation: enough for a voice written beside another voice's rate into one file."""
    if rate_in == rate_out or len(samples) == 0:
        return samples
    n_out = max(1, round(len(samples) * rate_out / rate_in))
    positions = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def make_output(
    settings: TtsSettings, *, device: int | str | None = None, realtime: bool = False
) -> AudioOutput:
    if settings.output == "speaker":
        return SpeakerOutput(device)
    return WavFileOutput(Path(settings.output), realtime=realtime)
