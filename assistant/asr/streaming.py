"""Streaming ASR: a sherpa-onnx OnlineRecognizer (any streaming transducer) with endpoint detection.

One utterance at a time: `start()`, then `accept(samples)` per block until `AsrUpdate.endpoint`, then
`finish()` for the final text. The endpoint rules are sherpa-onnx's (what the numbers mean):
rule1: `rule1_min_trailing_silence` s of silence with nothing decoded yet (nobody spoke);
rule2: `rule2_min_trailing_silence` s of silence after some text (the user stopped talking);
rule3: the utterance reached `rule3_min_utterance_length` s (cap on a run-on).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE
from assistant.errors import ModelError
from assistant.models.files import TransducerFiles

log = logging.getLogger(__name__)

TAIL_PADDING_S = 0.66
"""Silence appended by finish(): the encoder's right context (~320 ms chunks) holds back the last words."""


@dataclass(frozen=True)
class AsrUpdate:
    text: str
    """Normalised text of the utterance so far (upper case from the English KWS model)."""
    changed: bool
    """True when `text` differs from the previous update (a new partial result worth reporting)."""
    endpoint: bool
    """True when an endpoint rule fired: call finish() for the final text."""


def normalize_text(text: str) -> str:
    """Strip and collapse whitespace; case is kept (lower-casing is the caller's business)."""
    return " ".join(text.split())


class StreamingASR:
    """OnlineRecognizer over TransducerFiles; the KWS models here also load as (weak) recognizers."""

    def __init__(self, files: TransducerFiles, *, rule1_min_trailing_silence: float = 2.4,
                 rule2_min_trailing_silence: float = 1.2, rule3_min_utterance_length: float = 20.0,
                 decoding_method: str = "greedy_search", num_threads: int = 1, provider: str = "cpu",
                 max_active_paths: int = 4):
        import sherpa_onnx

        for path in (files.encoder, files.decoder, files.joiner, files.tokens):
            if not path.is_file():
                raise ModelError(f"model file {path} not found")
        started = time.perf_counter()
        try:
            self._recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
                tokens=str(files.tokens), encoder=str(files.encoder), decoder=str(files.decoder),
                joiner=str(files.joiner), num_threads=num_threads, sample_rate=SAMPLE_RATE, feature_dim=80,
                enable_endpoint_detection=True,
                rule1_min_trailing_silence=rule1_min_trailing_silence,
                rule2_min_trailing_silence=rule2_min_trailing_silence,
                rule3_min_utterance_length=rule3_min_utterance_length,
                decoding_method=decoding_method, max_active_paths=max_active_paths, provider=provider,
            )
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise ModelError(f"cannot load streaming ASR from {files.encoder.parent}: {exc}") from None
        log.info("streaming ASR %s (%s) loaded in %.0f ms", files.encoder.parent.name, decoding_method,
                 (time.perf_counter() - started) * 1000)
        self._stream = None
        self._text = ""
        self.decode_s = 0.0  # time spent decoding, for RTF reports

    def fork(self) -> StreamingASR:
        """A recognizer with its own stream over this one's loaded model (one per network client).

        sherpa-onnx keeps all decoding state in the stream, and one OnlineRecognizer decodes many streams
        (its own websocket server does so from a thread pool), so a fork costs a stream, not a model.
        """
        twin = copy.copy(self)
        twin._stream = None
        twin._text = ""
        twin.decode_s = 0.0
        return twin

    def start(self) -> None:
        """Begin a new utterance (a fresh stream: no state carries over from the last one)."""
        self._stream = self._recognizer.create_stream()
        self._text = ""

    def accept(self, samples: np.ndarray) -> AsrUpdate:
        """Feed 16 kHz float32 samples; returns the text so far and whether an endpoint was reached."""
        if self._stream is None:
            self.start()
        recognizer, stream = self._recognizer, self._stream
        started = time.perf_counter()
        stream.accept_waveform(SAMPLE_RATE, np.asarray(samples, dtype=np.float32))
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        text = normalize_text(recognizer.get_result(stream))
        endpoint = recognizer.is_endpoint(stream)
        self.decode_s += time.perf_counter() - started
        changed = text != self._text
        self._text = text
        return AsrUpdate(text=text, changed=changed, endpoint=endpoint)

    def finish(self) -> str:
        """Pad, flush and return the utterance's final text; the next accept() starts a new utterance."""
        if self._stream is None:
            return ""
        recognizer, stream = self._recognizer, self._stream
        stream.accept_waveform(SAMPLE_RATE, np.zeros(int(TAIL_PADDING_S * SAMPLE_RATE), np.float32))
        stream.input_finished()
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        text = normalize_text(recognizer.get_result(stream))
        self._stream = None
        self._text = ""
        return text
