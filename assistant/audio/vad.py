"""Silero voice activity detection through sherpa-onnx, with the model checked before sherpa sees it.

sherpa-onnx exits the whole process (no exception) when a readable ONNX file is not a silero model, so the
file's graph inputs are checked here first with onnxruntime, which turns every bad file into a ModelError that
names the path and the fetch command.

onnxruntime and sherpa_onnx are imported inside the functions that load a model: assistant.settings imports
this module (through the gate's settings), and `assistant models list` should not pay ~0.25 s for runtimes
it never uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assistant.errors import ModelError
from assistant.settings import VadSettings

if TYPE_CHECKING:
    import sherpa_onnx

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FETCH_HINT = "run `assistant models fetch vad-silero`"
# Input names of the silero exports sherpa-onnx accepts: v5 (input, state, sr) and v4 (input, sr, h, c).
_SILERO_INPUTS = ({"input", "state", "sr"}, {"input", "sr", "h", "c"})


def check_silero_model(path: Path) -> None:
    """Raise ModelError unless `path` is an ONNX file with a silero VAD's inputs."""
    if not path.is_file():
        raise ModelError(f"silero VAD model not found: {path}; {FETCH_HINT}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
        raise ModelError(f"silero VAD model {path} cannot be loaded ({exc}); {FETCH_HINT}") from exc
    names = {i.name for i in session.get_inputs()}
    if not any(expected <= names for expected in _SILERO_INPUTS):
        raise ModelError(f"{path} is not a silero VAD model (inputs {sorted(names)}); {FETCH_HINT}")


def make_vad(settings: VadSettings, buffer_s: float = 60.0) -> sherpa_onnx.VoiceActivityDetector:
    """A sherpa-onnx VoiceActivityDetector for 16 kHz audio; `buffer_s` bounds the speech it keeps."""
    import sherpa_onnx

    check_silero_model(settings.model)
    silero = sherpa_onnx.SileroVadModelConfig(
        model=str(settings.model),
        threshold=settings.threshold,
        min_silence_duration=settings.min_silence_s,
        min_speech_duration=settings.min_speech_s,
        max_speech_duration=settings.max_speech_s,
    )
    config = sherpa_onnx.VadModelConfig(silero_vad=silero, sample_rate=SAMPLE_RATE, num_threads=settings.num_threads)
    try:
        return sherpa_onnx.VoiceActivityDetector(config, buffer_size_in_seconds=buffer_s)
    except RuntimeError as exc:
        raise ModelError(f"silero VAD model {settings.model} cannot be loaded ({exc}); {FETCH_HINT}") from exc


FEED_SAMPLES = 1600
"""Largest piece handed to accept_waveform at once: sherpa-onnx 2.0.1's VAD loses segments when one call
carries seconds of audio (a 16 s array gave 1 segment of 0.3 s; the same audio in 100 ms pieces gave 2)."""


def feed(vad: sherpa_onnx.VoiceActivityDetector, samples: np.ndarray) -> None:
    """accept_waveform in pieces of at most FEED_SAMPLES."""
    samples = np.asarray(samples, dtype=np.float32)
    for i in range(0, len(samples), FEED_SAMPLES):
        vad.accept_waveform(samples[i : i + FEED_SAMPLES])


@dataclass(frozen=True)
class SpeechSegment:
    start_s: float  # seconds from the first sample fed to the detector
    samples: np.ndarray  # float32 16 kHz mono

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def pop_segments(vad: sherpa_onnx.VoiceActivityDetector) -> list[SpeechSegment]:
    """Take every finished speech segment out of `vad` (they pile up in its buffer otherwise)."""
    segments = []
    while not vad.empty():
        front = vad.front
        segments.append(SpeechSegment(front.start / SAMPLE_RATE, np.asarray(front.samples, dtype=np.float32)))
        vad.pop()
    return segments
