"""Wake word: a sherpa-onnx KeywordSpotter and its stream, fed 16 kHz chunks, reporting which keyword fired.

Where the keyword ended (`Detection.t_end`) matters: the ASR starts from there so that words said right after
the wake word are not lost. sherpa-onnx 2.0.1 leaves `KeywordResult.tokens/timestamps` empty for the KWS
models here (checked on both), so the end is estimated from the detection time minus the spotter's
latency, measured on real clips (see DETECTION_LATENCY_S). Typical use with an AudioRing:

    ring.push(chunk)
    if (hit := wake.accept(chunk)) is not None:
        asr.start()
        asr.accept(ring.since(hit.t_end))   # the words said right after the wake word, then live chunks

"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.errors import ModelError
from assistant.models.files import TransducerFiles
from assistant.wake.keywords import Keyword, format_keywords, sherpa_tag

log = logging.getLogger(__name__)

DETECTION_LATENCY_S = 0.6
"""Assumed time from a keyword's last sound to its report, fed 100 ms blocks (the encoder consumes ~320 ms
chunks and then needs a trailing blank). Against the ASR token time stamps of 18 keywords on the English and
Chinese clips, reports came 0.24-0.54 s after the keyword's last token was emitted, and sometimes after the
next word had begun. 0.5 s lost the first word when speech followed the keyword with no pause at all
(tests/test_asr.py::test_no_pause_after_wake_word); 0.6 s keeps it, at the price of a stray syllable of the
keyword at the start of some transcripts (SORROW -> "ALL OF HIS LIFE ..."). Losing a word is worse."""

KEYWORD_END_ERROR_S = 0.5
"""Seconds the estimate of a keyword's end (t - DETECTION_LATENCY_S) can be early: on JFK it said 2.20 s and the
VAD heard the keyword's speech go on to 2.39 s. The vad-offline recognizer drops speech that ends this soon."""

STOP_TAG_PREFIX = "stop:"  # the sherpa-onnx tag of a stop phrase is its label behind this

TAIL_PADDING_S = 0.66
"""Silence appended by flush(): a keyword right at the end of the input is reported only after ~0.5 s more."""


@dataclass(frozen=True)
class Detection:
    label: str
    """The keyword's label (`@label`, else the phrase as written)."""
    keyword_text: str
    """The keyword as written in the keywords file (first line with that label)."""
    t: float
    """Input time (s) at which the spotter reported it: the end of the audio fed so far."""
    t_end: float
    """Estimated input time (s) the keyword ended, t - DETECTION_LATENCY_S: hand the ASR audio from here."""
    kind: str = "wake"
    """"wake" (a wake word) or "stop" (a stop phrase, wake.stop_phrases)."""


class Spotter(Protocol):
    """What the daemon needs of a wake word: WakeWord, and GatedWakeWord in front of it (wake/gate.py).

    `admit` is cheap and runs on the event loop; `spot` is the model's work and runs in the model pool, for the
    chunks `admit` let through. Splitting the two keeps quiet-room chunks off the pool entirely.
    """

    @property
    def labels(self) -> list[str]: ...

    def admit(self, chunk: AudioChunk) -> bool:
        """True when `spot(chunk)` must run next for this chunk."""
        ...

    def spot(self, chunk: AudioChunk) -> Detection | None:
        """Feed an admitted chunk; the keyword it completed, if any."""
        ...

    def accept(self, chunk: AudioChunk) -> Detection | None:
        """admit + spot in one call (tests, benchmarks)."""
        ...

    def reset(self) -> None: ...

    def flush(self) -> Detection | None:
        """End of input: report a keyword said at the very end."""
        ...


def _check_files(files: TransducerFiles) -> None:
    for path in (files.encoder, files.decoder, files.joiner, files.tokens):
        if not path.is_file():
            raise ModelError(f"model file {path} not found")


class WakeWord:
    """Keyword spotting over a continuous stream of AudioChunks.

    `accept(chunk)` returns a Detection or None; the stream is reset right after a detection so the same
    utterance cannot fire twice. A new keyword list (SIGHUP) is a new WakeWord, built off the hot path.
    """

    def __init__(self, files: TransducerFiles, keywords: list[Keyword], *, keywords_score: float = 1.0,
                 keywords_threshold: float = 0.25, num_threads: int = 1, provider: str = "cpu",
                 max_active_paths: int = 4, num_trailing_blanks: int = 1,
                 latency_s: float = DETECTION_LATENCY_S, stop_keywords: list[Keyword] | None = None):
        _check_files(files)
        self.files = files
        self._options = dict(keywords_score=keywords_score, keywords_threshold=keywords_threshold,
                             num_threads=num_threads, provider=provider, max_active_paths=max_active_paths,
                             num_trailing_blanks=num_trailing_blanks)
        self.latency_s = latency_s
        self._spotter, self._by_tag = self._build(keywords, stop_keywords or [])
        self._stream = self._spotter.create_stream()
        self._t = 0.0  # input time of the end of the audio fed so far
        self.decode_s = 0.0  # CPU-side time spent in decode, for RTF reports

    def _build(self, keywords: list[Keyword], stop_keywords: list[Keyword]):
        import sherpa_onnx

        if not keywords:
            raise ModelError("no keywords to spot")
        by_tag: dict[str, tuple[Keyword, str]] = {}
        for kw in keywords:
            by_tag.setdefault(sherpa_tag(kw.label), (kw, "wake"))
        # Stop phrases share the one model and stream; their own tags keep a stop label that equals a wake
        # label apart.
        stops = [dataclasses.replace(kw, label=STOP_TAG_PREFIX + kw.label) for kw in stop_keywords]
        for kw, original in zip(stops, stop_keywords, strict=True):
            by_tag.setdefault(sherpa_tag(kw.label), (original, "stop"))
        keywords = keywords + stops
        # sherpa-onnx 2.0.1's Python API takes keywords only as a file
        fd, path = tempfile.mkstemp(prefix="keywords-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(format_keywords(keywords))
            started = time.perf_counter()
            try:
                spotter = sherpa_onnx.KeywordSpotter(
                    tokens=str(self.files.tokens), encoder=str(self.files.encoder),
                    decoder=str(self.files.decoder), joiner=str(self.files.joiner), keywords_file=path,
                    **self._options,
                )
            except (RuntimeError, ValueError, AssertionError) as exc:
                where = self.files.encoder.parent
                raise ModelError(f"cannot load keyword spotter from {where}: {exc}") from None
        finally:
            os.unlink(path)
        log.info("keyword spotter %s: %d keyword lines, %d labels (%d stop), loaded in %.0f ms",
                 self.files.encoder.parent.name, len(keywords), len(by_tag), len({k.label for k in stops}),
                 (time.perf_counter() - started) * 1000)
        return spotter, by_tag

    @property
    def labels(self) -> list[str]:
        return [kw.label for kw, kind in self._by_tag.values() if kind == "wake"]

    @property
    def stop_labels(self) -> list[str]:
        return [kw.label for kw, kind in self._by_tag.values() if kind == "stop"]

    def reset(self, t: float | None = None) -> None:
        """Start a fresh stream (e.g. back to IDLE); `t` = input time of the next chunk, if known."""
        self._stream = self._spotter.create_stream()
        if t is not None:
            self._t = t

    def admit(self, chunk: AudioChunk) -> bool:
        return True  # ungated: the spotter sees every chunk

    def accept(self, chunk: AudioChunk) -> Detection | None:
        return self.spot(chunk)

    def spot(self, chunk: AudioChunk) -> Detection | None:
        """Feed one chunk; returns the first keyword reported while decoding it, or None."""
        if abs(chunk.t - self._t) > 1e-3:
            self._t = chunk.t  # a gap (dropped blocks, or audio skipped while LISTENING): time follows input
        self._stream.accept_waveform(SAMPLE_RATE, chunk.samples)
        self._t = chunk.t_end
        return self._decode()

    def flush(self) -> Detection | None:
        """End of input: pad with silence and finish the stream so a keyword at the very end is reported."""
        self._stream.accept_waveform(SAMPLE_RATE, np.zeros(int(TAIL_PADDING_S * SAMPLE_RATE), np.float32))
        self._stream.input_finished()
        detection = self._decode(t=self._t)
        self._stream = self._spotter.create_stream()
        return detection

    def _decode(self, t: float | None = None) -> Detection | None:
        spotter, stream = self._spotter, self._stream
        detection = None
        started = time.perf_counter()
        while spotter.is_ready(stream):
            spotter.decode_stream(stream)
            tag = spotter.get_result(stream)
            if not tag:
                continue
            spotter.reset_stream(stream)
            if detection is not None:
                log.info("keyword %s also fired in the same block; ignored", tag)
                continue
            kw, kind = self._by_tag.get(tag, (None, "wake"))
            at = self._t if t is None else t
            detection = Detection(label=kw.label if kw else tag, keyword_text=kw.phrase if kw else tag,
                                  t=at, t_end=max(0.0, at - self.latency_s), kind=kind)
            log.info("%s %r at %.2f s (keyword end ~%.2f s)", "stop phrase" if kind == "stop" else "wake word",
                     detection.label, detection.t, detection.t_end)
        self.decode_s += time.perf_counter() - started
        return detection
