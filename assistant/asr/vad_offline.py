"""The second ASR engine: silero VAD cuts the speech after the wake word, a sherpa-onnx OfflineRecognizer
(SenseVoice by default; paraformer and whisper too) transcribes each cut.

Same interface as assistant.asr.streaming.StreamingASR (`start()`, `accept(samples) -> AsrUpdate`, `finish()`), so
`asr.engine: vad-offline` needs no other change in the daemon. The final text comes when the VAD closes the
first speech segment, i.e. after `min_silence_s` of trailing silence (the VAD's counterpart of endpoint
rule2), which is also when `endpoint` is reported. A segment longer than `max_speech_s` is cut there (rule3).
The no-speech timeout stays the daemon's.

Two things the daemon's timeline needs from this engine (measured on the JFK clip through the daemon):
- The daemon starts the ASR `pre_roll_s` before the spotter's estimate of the keyword's end, so the VAD
  first hears the keyword's last syllable, then the speaker's pause after the wake word, and closed that as
  the utterance ("...cans" at 0.00-0.49 s; the question after it was never heard). A first segment that was
  already running when listening started and ends within `keyword_tail_s` is that tail: it is dropped.
- The daemon's no-speech timeout ends the utterance when no text came within `no_speech_timeout_s`: with text
  only at the endpoint, a sentence longer than a few seconds was cut off as "no speech". With
  `first_partial_s` > 0 the open segment is decoded after that many seconds of speech, then at 2x, 4x, ...
  that length: partial text as the streaming engine gives, at most about twice the final decode's cost.

sherpa-onnx exits the process (no exception) when a SenseVoice file lacks a metadata key it needs, so the
keys are read here first, straight from the ONNX file's top-level protobuf fields (no onnx package, no
session: the weights are skipped, not read).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from assistant.asr.streaming import AsrUpdate, normalize_text
from assistant.audio.vad import SAMPLE_RATE, SpeechSegment, feed, make_vad, pop_segments
from assistant.errors import ModelError
from assistant.settings import VadSettings

log = logging.getLogger(__name__)

OfflineKind = Literal["sense_voice", "paraformer", "whisper"]

# What sherpa-onnx's SenseVoice loader reads without a default (offline-sense-voice-model.cc).
SENSE_VOICE_KEYS = (
    "vocab_size", "lfr_window_size", "lfr_window_shift", "normalize_samples", "with_itn", "without_itn",
    "lang_auto", "lang_zh", "lang_en", "lang_ja", "lang_ko", "lang_yue", "neg_mean", "inv_stddev",
)  # fmt: skip


@dataclass(frozen=True)
class OfflineModelFiles:
    kind: OfflineKind
    tokens: Path
    model: Path | None = None  # sense_voice / paraformer: the single model .onnx
    encoder: Path | None = None  # whisper
    decoder: Path | None = None  # whisper
    name: str = "sensevoice"  # the `assistant models fetch` name, for error messages


def _fetch_hint(name: str) -> str:
    return f"run `assistant models fetch {name}`"


def _pick(directory: Path, prefix: str, name: str) -> Path:
    found = sorted(p for p in directory.glob(f"{prefix}*.onnx") if p.is_file())
    if not found:
        raise ModelError(f"model {name!r}: no {prefix}*.onnx in {directory}; {_fetch_hint(name)}")
    int8 = [p for p in found if ".int8." in p.name]
    return (int8 or found)[0]


def find_offline_model(
    directory: Path, kind: OfflineKind = "sense_voice", name: str = "sensevoice"
) -> OfflineModelFiles:
    """Locate an offline model's files in `directory` (int8 preferred), as the releases name them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model {name!r}: directory {directory} not found; {_fetch_hint(name)}")
    tokens = sorted(directory.glob("*tokens.txt"))
    if not tokens:
        raise ModelError(f"model {name!r}: no tokens.txt in {directory}; {_fetch_hint(name)}")
    if kind == "whisper":
        # whisper releases name them like tiny.en-encoder.int8.onnx
        encoder = _pick(directory, "*encoder", name)
        decoder = _pick(directory, "*decoder", name)
        return OfflineModelFiles(kind, tokens[0], encoder=encoder, decoder=decoder, name=name)
    return OfflineModelFiles(kind, tokens[0], model=_pick(directory, "model", name), name=name)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def onnx_metadata(path: Path) -> dict[str, str]:
    """`metadata_props` of an ONNX file (ModelProto field 14), seeking over the graph instead of reading it.

    Raises ValueError when the file is not a protobuf message.
    """
    out: dict[str, str] = {}
    size = path.stat().st_size
    with path.open("rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(20)
            key, n = _varint(head, 0)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, n = _varint(head, n)
                pos += n
            elif wire == 1:
                pos += n + 8
            elif wire == 5:
                pos += n + 4
            elif wire == 2:
                length, n = _varint(head, n)
                pos += n
                if field == 14:
                    fh.seek(pos)
                    name, value = _entry(fh.read(length))
                    out[name] = value
                pos += length
            else:
                raise ValueError(f"wire type {wire} at byte {pos}")
        if pos != size:
            raise ValueError("truncated")
    return out


def _entry(data: bytes) -> tuple[str, str]:
    key = value = ""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        length, pos = _varint(data, pos)
        text = data[pos : pos + length].decode("utf-8", errors="replace")
        pos += length
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def _check_file(path: Path | None, what: str, name: str) -> Path:
    if path is None or not path.is_file():
        raise ModelError(f"{what} not found: {path}; {_fetch_hint(name)}")
    return path


def _check_sense_voice(path: Path, name: str) -> None:
    try:
        meta = onnx_metadata(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({exc}); {_fetch_hint(name)}") from exc
    missing = [k for k in SENSE_VOICE_KEYS if k not in meta]
    if missing:
        raise ModelError(
            f"{path} is not a SenseVoice model (metadata lacks {', '.join(missing)}); {_fetch_hint(name)}"
        )


def make_offline_recognizer(
    files: OfflineModelFiles, *, language: str = "auto", use_itn: bool = True, num_threads: int = 1
):  # -> sherpa_onnx.OfflineRecognizer
    import sherpa_onnx

    tokens = _check_file(files.tokens, "tokens file", files.name)
    try:
        if files.kind == "sense_voice":
            model = _check_file(files.model, "SenseVoice model", files.name)
            _check_sense_voice(model, files.name)
            return sherpa_onnx.OfflineRecognizer.from_sense_voice(
                model=str(model), tokens=str(tokens), num_threads=num_threads,
                language="" if language == "auto" else language, use_itn=use_itn,
            )
        if files.kind == "paraformer":
            model = _check_file(files.model, "paraformer model", files.name)
            return sherpa_onnx.OfflineRecognizer.from_paraformer(
                paraformer=str(model), tokens=str(tokens), num_threads=num_threads
            )
        if files.kind == "whisper":
            encoder = _check_file(files.encoder, "whisper encoder", files.name)
            decoder = _check_file(files.decoder, "whisper decoder", files.name)
            return sherpa_onnx.OfflineRecognizer.from_whisper(
                encoder=str(encoder), decoder=str(decoder), tokens=str(tokens), num_threads=num_threads,
                language="" if language == "auto" else language,
            )
    except (RuntimeError, ValueError) as exc:
        hint = _fetch_hint(files.name)
        raise ModelError(f"cannot load {files.kind} model {files.name!r}: {exc}; {hint}") from None
    raise ValueError(f"unknown offline model kind {files.kind!r}")


class VadOfflineASR:
    """silero VAD + OfflineRecognizer behind StreamingASR's start/accept/finish."""

    def __init__(
        self,
        files: OfflineModelFiles,
        vad: VadSettings,
        *,
        language: str = "auto",
        use_itn: bool = True,
        num_threads: int = 1,
        keyword_tail_s: float = 0.0,
        first_partial_s: float = 0.0,
    ) -> None:
        started = time.perf_counter()
        self._vad = make_vad(vad, buffer_s=vad.max_speech_s + 10.0)
        self._recognizer = make_offline_recognizer(
            files, language=language, use_itn=use_itn, num_threads=num_threads
        )
        log.info("vad-offline ASR %s (%s) loaded in %.0f ms", files.name, files.kind,
                 (time.perf_counter() - started) * 1000)
        self.keyword_tail_s = keyword_tail_s  # s: a segment running from 0 and ending before is the keyword's
        self.first_partial_s = first_partial_s  # s of open segment before the first partial decode; 0 = none
        self._text: str | None = None  # the utterance's text once its segment is closed
        self._partial = ""  # the last partial text reported
        self._next_partial_s = first_partial_s  # open-segment length at which the next partial is decoded
        self._min_speech_s = vad.min_speech_s
        self._open_s = 0.0  # s of audio fed since the VAD last reported speech starting (detection lags it)
        self._active = False
        self.decode_s = 0.0  # time spent in the offline recognizer, for RTF reports

    def start(self) -> None:
        """Begin a new utterance: nothing carries over from the last one."""
        self._vad.reset()
        self._text = None
        self._partial = ""
        self._next_partial_s = self.first_partial_s
        self._open_s = 0.0
        self._active = True

    def accept(self, samples: np.ndarray) -> AsrUpdate:
        """Feed 16 kHz float32 samples; the text comes with the endpoint, at the end of the first segment."""
        if not self._active:
            self.start()
        if self._text is not None:
            # Already endpointed: the rest belongs to the next utterance (after finish()).
            return AsrUpdate(text=self._text, changed=False, endpoint=True)
        feed(self._vad, samples)
        self._open_s = self._open_s + len(samples) / SAMPLE_RATE if self._vad.is_speech_detected() else 0.0
        segments = self._speech(pop_segments(self._vad))
        if segments:
            self._text = self._transcribe(segments[0])
            return AsrUpdate(text=self._text, changed=self._text != self._partial, endpoint=True)
        return self._maybe_partial()

    def _speech(self, segments: list[SpeechSegment]) -> list[SpeechSegment]:
        """`segments` without the keyword's tail (see the module docstring)."""
        kept = []
        for segment in segments:
            if segment.start_s < 0.05 and segment.start_s + segment.duration_s <= self.keyword_tail_s:
                log.info("segment 0.00-%.2f s dropped: the end of the wake word", segment.duration_s)
                self._next_partial_s = self.first_partial_s
                continue
            kept.append(segment)
        return kept

    def _maybe_partial(self) -> AsrUpdate:
        # current_segment copies the whole open segment (~10 ms for 10 s): only when a partial may be due.
        if self.first_partial_s <= 0 or self._open_s + self._min_speech_s < self._next_partial_s:
            return AsrUpdate(text=self._partial, changed=False, endpoint=False)
        current = self._vad.current_segment
        segment = SpeechSegment(current.start / SAMPLE_RATE, np.asarray(current.samples, dtype=np.float32))
        if segment.duration_s < self._next_partial_s:
            return AsrUpdate(text=self._partial, changed=False, endpoint=False)
        # Doubling keeps the partial decodes of one segment below about twice the final decode's cost.
        self._next_partial_s = 2.0 * segment.duration_s
        text = self._transcribe(segment, partial=True)
        changed = bool(text) and text != self._partial
        if changed:
            self._partial = text
        return AsrUpdate(text=self._partial, changed=changed, endpoint=False)

    def finish(self) -> str:
        """The utterance's final text (flushing a segment still open); the next accept() starts anew."""
        if not self._active:
            return ""
        if self._text is None:
            self._vad.flush()
            segments = self._speech(pop_segments(self._vad))
            self._text = " ".join(t for t in (self._transcribe(s) for s in segments) if t)
        text = self._text
        self._active = False
        self._text = None
        return text

    def _transcribe(self, segment: SpeechSegment, partial: bool = False) -> str:
        started = time.perf_counter()
        stream = self._recognizer.create_stream()
        stream.accept_waveform(SAMPLE_RATE, segment.samples)
        self._recognizer.decode_stream(stream)
        text = normalize_text(stream.result.text)
        spent = time.perf_counter() - started
        self.decode_s += spent
        log.log(logging.DEBUG if partial else logging.INFO, "%s %.2f-%.2f s decoded in %.0f ms: %r",
                "open segment" if partial else "segment", segment.start_s, segment.start_s + segment.duration_s,
                spent * 1000, text)
        return text
