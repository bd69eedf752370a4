"""Wake word: a sherpa-onnx KeywordSpotter and its stream, fed 16 kHz chunks, reporting which keyword fired.

Where the keyword ended (`Detection.t_end`) matters: the ASR starts from there so that words said right after
the wake word are not lost. sherpa-onnx 2.0.1 gives per-token times through the C++ result object,
`spotter.keyword_spotter.get_result(stream)` (`.keyword`, `.tokens`, `.timestamps`); the Python
`KeywordSpotter.get_result` returns only the keyword string, and reading the result clears it (upstream issue
3677: `timestamps()` after `get_result()` is empty), so the object is read once per detection. The times
count from the last reset of the stream's decoder: our own `reset_stream` after a detection, or the one
sherpa-onnx does by itself after 1.5 s of trailing blanks (keyword-spotter-transducer-impl.h), which Python
cannot see. Both happen between decode calls, so the origin is a whole number of decoder chunks (0.32 s) after
the stream started, and which one follows from where a detection can happen (`_keyword_end`). The end is then
mapped from stream time to input time (the gated spotter starts a stream on replayed pre-roll). When a
result carries no times, the estimate stays: detection time minus DETECTION_LATENCY_S. Typical use with an
AudioRing:

    ring.push(chunk)
    if (hit := wake.accept(chunk)) is not None:
        asr.start()
        asr.accept(ring.since(hit.t_end))   # the words said right after the wake word, then live chunks

"""

from __future__ import annotations

import copy
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

TOKEN_DELAY_S = 0.2
"""Seconds by which a token's time stamp (the frame the streaming transducer emitted it at) trails the end of
its sound. JFK: the energy of "... fellow Americans" drops at ~2.15 s, the last token of AMERICANS is stamped
2.40 s. 0.25 s put the ASR's start where "MR QUILTER" said with no pause came out "MR QUILT HER" (test_asr.py's
no-pause tests); 0.2 s starts it where the old estimate did on that clip and keeps both right."""

FRAME_S = 0.04  # one encoder output frame (10 ms features, subsampled 4x; sherpa-onnx's Convert assumes it)

SPEAKING_THRESHOLD = 0.65
"""Trigger threshold of the stop phrases while a reply is live and no echo canceller runs (wake.speaking_threshold
null). bench/stop_threshold.py (BENCHMARKS.md, "Barge-in without a canceller"): on 8 min of espeak-ng answers
through the simulated room the default 0.25 fired STOP 5 times as one stream and 7 times with each reply on
fresh streams; 0.45 and 0.55 still 3 and 2 (fresh), 0.65 none, with the same recall of SORROW over the echo
(100 / 67 / 0 % at +20 / +10 / +5 dB) and espeak-ng's "Stop.", "Stop talking.", "Never mind." still heard. 0.75
also cleared a last STOP on re-cut echo, but lost "Never mind." and some recall."""

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
    """Input time (s) the keyword ended: its last token's time from sherpa-onnx minus TOKEN_DELAY_S, or the
    estimate t - DETECTION_LATENCY_S when there are no token times. Hand the ASR audio from here."""
    timed: bool = False
    """Whether t_end comes from the token times (False: the estimate)."""
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
        self._keywords, self._stop_keywords = list(keywords), list(stop_keywords or [])
        self._spotter, self._by_tag = self._build(keywords, stop_keywords or [])
        self.chunk_s = self._measure_chunk()
        self._stream = self._spotter.create_stream()
        self._t = 0.0  # input time of the end of the audio fed so far
        self._new_stream_bookkeeping()
        self.decode_s = 0.0  # CPU-side time spent in decode, for RTF reports
        self.barge_in: BargeInSpotter | None = None  # what listens while a reply is live (barge_in_spotter)

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

    def _measure_chunk(self) -> float:
        """Seconds of audio one decode_stream call consumes (the encoder's chunk shift), by feeding silence."""
        stream = self._spotter.create_stream()
        counts = []
        for _ in range(2):
            stream.accept_waveform(SAMPLE_RATE, np.zeros(int(3.2 * SAMPLE_RATE), np.float32))
            n = 0
            while self._spotter.is_ready(stream):
                self._spotter.decode_stream(stream)
                n += 1
            counts.append(n)
        # The first block also fills the encoder's look-ahead; the second is all steady state.
        return 3.2 / counts[1] if counts[1] else 0.32

    def _new_stream_bookkeeping(self) -> None:
        self._decodes = 0  # decode_stream calls on the current stream
        self._fed = 0  # samples fed to the current stream
        # (stream sample, input time) at the stream's start and at every gap in the input
        self._segments: list[tuple[int, float]] = []

    @property
    def labels(self) -> list[str]:
        return [kw.label for kw, kind in self._by_tag.values() if kind == "wake"]

    @property
    def stop_labels(self) -> list[str]:
        return [kw.label for kw, kind in self._by_tag.values() if kind == "stop"]

    @property
    def trailing_blanks(self) -> int:
        """num_trailing_blanks the loaded spotter was built with."""
        return int(self._options["num_trailing_blanks"])

    def thresholds(self, kind: str = "stop") -> dict[str, float]:
        """The trigger threshold each keyword of `kind` ("wake" or "stop") was built with, by label (a label
        with several lines, e.g. sandhi variants: the lowest, the one that fires first)."""
        keywords = self._stop_keywords if kind == "stop" else self._keywords
        default = float(self._options["keywords_threshold"])
        found: dict[str, float] = {}
        for kw in keywords:
            value = kw.threshold if kw.threshold is not None else default
            found[kw.label] = min(found.get(kw.label, value), value)
        return found

    def fork(self) -> WakeWord:
        """A spotter with its own stream and clock over this one's loaded model (one per network client)."""
        twin = copy.copy(self)
        twin._stream = self._spotter.create_stream()
        twin._new_stream_bookkeeping()  # fresh lists, not the shared ones copy.copy would keep
        twin._t = 0.0
        twin.decode_s = 0.0
        twin.barge_in = None  # the daemon's barge-in streams are its own, never a client's
        return twin

    def reset(self, t: float | None = None) -> None:
        """Start a fresh stream (e.g. back to IDLE); `t` = input time of the next chunk, if known."""
        self._stream = self._spotter.create_stream()
        self._new_stream_bookkeeping()
        if t is not None:
            self._t = t

    def lead(self, seconds: float) -> None:
        """Feed `seconds` of silence to a fresh stream before its first chunk: its encoder chunks then end that
        much earlier in input time (BargeInSpotter staggers its streams so)."""
        samples = int(round(seconds * SAMPLE_RATE))
        if samples > 0:
            self._stream.accept_waveform(SAMPLE_RATE, np.zeros(samples, np.float32))
            self._fed += samples
            self._decode()  # nothing can fire on silence; keeps the decode count in step with the stream

    def admit(self, chunk: AudioChunk) -> bool:
        return True  # ungated: the spotter sees every chunk

    def accept(self, chunk: AudioChunk) -> Detection | None:
        return self.spot(chunk)

    def spot(self, chunk: AudioChunk) -> Detection | None:
        """Feed one chunk; returns the first keyword reported while decoding it, or None."""
        if abs(chunk.t - self._t) > 1e-3 or not self._segments:
            self._t = chunk.t  # a gap (dropped blocks, or audio skipped while LISTENING): time follows input
            self._segments.append((self._fed, chunk.t))
        self._stream.accept_waveform(SAMPLE_RATE, chunk.samples)
        self._fed += len(chunk.samples)
        self._t = chunk.t_end
        return self._decode()

    def flush(self) -> Detection | None:
        """End of input: pad with silence and finish the stream so a keyword at the very end is reported."""
        self._stream.accept_waveform(SAMPLE_RATE, np.zeros(int(TAIL_PADDING_S * SAMPLE_RATE), np.float32))
        self._stream.input_finished()
        detection = self._decode(t=self._t)
        self._stream = self._spotter.create_stream()
        self._new_stream_bookkeeping()
        return detection

    def _decode(self, t: float | None = None) -> Detection | None:
        spotter, stream = self._spotter, self._stream
        detection = None
        started = time.perf_counter()
        while spotter.is_ready(stream):
            spotter.decode_stream(stream)
            self._decodes += 1
            # The C++ result, read once: it holds the keyword and its token times (see the module docstring).
            result = spotter.keyword_spotter.get_result(stream)
            tag = result.keyword.strip()
            if not tag:
                continue
            times = list(result.timestamps)
            spotter.reset_stream(stream)
            ended = self._keyword_end(times[-1]) if times else None
            if detection is not None:
                log.info("keyword %s also fired in the same block; ignored", tag)
                continue
            kw, kind = self._by_tag.get(tag, (None, "wake"))
            at = self._t if t is None else t
            t_end = min(at, ended) if ended is not None else max(0.0, at - self.latency_s)
            detection = Detection(label=kw.label if kw else tag, keyword_text=kw.phrase if kw else tag,
                                  t=at, t_end=t_end, kind=kind, timed=ended is not None)
            log.info("%s %r at %.2f s (keyword end %s%.2f s)", "stop phrase" if kind == "stop" else "wake word",
                     detection.label, detection.t, "" if ended is not None else "~", detection.t_end)
        self.decode_s += time.perf_counter() - started
        return detection

    def _keyword_end(self, last_token_s: float) -> float | None:
        """Input time at which a keyword whose last token has time `last_token_s` ended (see the docstring).

        The token times count from a decoder reset, which is always at a chunk boundary, so the last token is
        at `last_token_s` plus a whole number of chunks. A keyword is reported in the chunk that holds its last
        token when at least num_trailing_blanks + 1 frames follow the token in that chunk, else in the next
        one (measured: JFK with 0-3.3 s of silence before it, so the origins differ, tests/test_keyword_timing.py).
        So the token is in the chunk just decoded unless that would leave fewer frames after it, and then it
        was at the end of the chunk before.
        """
        chunk = self.chunk_s
        decoded_s = self._decodes * chunk  # stream time up to which the encoder has produced frames
        blanks = self._options["num_trailing_blanks"] * FRAME_S
        stream_s = last_token_s + np.floor((decoded_s - chunk - last_token_s) / chunk + 1e-6) * chunk
        if stream_s < decoded_s - chunk - 1e-6:
            stream_s += chunk
        if stream_s + blanks + FRAME_S > decoded_s - FRAME_S + 1e-6:
            stream_s -= chunk
        return self._input_time(max(0.0, stream_s - TOKEN_DELAY_S))

    def _input_time(self, stream_s: float) -> float | None:
        """Map seconds of the current stream to input time across the gaps it was fed over."""
        sample = stream_s * SAMPLE_RATE
        for start, t in reversed(self._segments):
            if sample >= start:
                return t + (sample - start) / SAMPLE_RATE
        return None


class BargeInSpotter:
    """The spotter while a reply is live (THINKING, SPEAKING): the same keywords on `streams` streams whose
    encoder chunks are staggered by chunk_s / streams, and a keyword reports as soon as any of them has seen it.

    Why: the streaming encoder consumes fixed 0.32 s chunks (the model's export; both shared KWS models are
    chunk-16), so a keyword is decoded only when the chunk holding its end, plus the encoder's look-ahead, has
    been fed: on average half a chunk after the keyword ends, at worst a whole one. With k staggered streams one
    of them completes a chunk every 0.32/k s. The streams share the loaded model (WakeWord.fork), so the cost
    is k decodes per chunk while a reply is live, never while idle (2.9 % of a core per stream here). Measured
    live (BENCHMARKS.md, barge-in): 4 streams and num_trailing_blanks 0 took the median stop-to-silence from
    432 to 336 ms (310 ms with 50 ms input blocks); the model's own floor (token emission + look-ahead) is
    ~0.2 s of that. Offline over the assistant's echo its recall was not lower than one stream's; false alarms
    rise a little with k (more chunk phases look at the same audio; BENCHMARKS.md, barge-in).
    """

    def __init__(self, wake: WakeWord, streams: int, *, source: WakeWord | None = None,
                 trailing_blanks: int | None = None, speaking_threshold: float | None = None) -> None:
        if streams < 1:
            raise ValueError("streams must be >= 1")
        self.wake = wake
        self.streams = [wake.fork() for _ in range(streams)]
        # How it was built (barge_in_spotter), so the daemon can build the other kind when it finds it needs it:
        self.source = source or wake  # the wake word it mirrors
        self.trailing_blanks = trailing_blanks
        self.speaking_threshold = speaking_threshold  # None: the stop phrases' own thresholds (a canceller runs)
        self.reset()

    @property
    def labels(self) -> list[str]:
        return self.wake.labels

    @property
    def stop_labels(self) -> list[str]:
        return self.wake.stop_labels

    @property
    def decode_s(self) -> float:
        return sum(s.decode_s for s in self.streams)

    def reset(self, t: float | None = None) -> None:
        """Fresh streams, stream k led by k/n of a chunk of silence; `t` = input time of the next chunk."""
        step = self.wake.chunk_s / len(self.streams)
        for k, stream in enumerate(self.streams):
            stream.reset(t)
            stream.lead(k * step)

    def admit(self, chunk: AudioChunk) -> bool:
        return True  # a reply is live: the room is not quiet for long, and the reply's echo keeps a gate open

    def accept(self, chunk: AudioChunk) -> Detection | None:
        return self.spot(chunk)

    def spot(self, chunk: AudioChunk) -> Detection | None:
        """Feed every stream; the first keyword any of them completed (all restart after one, so the same
        phrase is not reported again by a slower stream)."""
        found = [d for d in (stream.spot(chunk) for stream in self.streams) if d is not None]
        if not found:
            return None
        self.reset(chunk.t_end)
        return min(found, key=lambda d: d.t_end)

    def flush(self) -> Detection | None:
        found = [d for d in (stream.flush() for stream in self.streams) if d is not None]
        return min(found, key=lambda d: d.t_end) if found else None


def fallback_threshold(configured: float | None) -> float:
    """wake.speaking_threshold as used: the configured number, or SPEAKING_THRESHOLD for null."""
    return SPEAKING_THRESHOLD if configured is None else float(configured)


def raised_thresholds(keywords: list[Keyword], threshold: float, default: float) -> list[Keyword]:
    """`keywords` with their trigger threshold raised to at least `threshold`. A line's own `#threshold` (or the
    spotter's `default` where it has none) stays when it is higher: the raise guards against our own voice and
    never makes a phrase easier to fire than its owner set it."""
    return [dataclasses.replace(kw, threshold=max(threshold, kw.threshold if kw.threshold is not None else default))
            for kw in keywords]


def barge_in_spotter(wake: WakeWord, streams: int = 2, trailing_blanks: int | None = 0,
                     speaking_threshold: float | None = None) -> BargeInSpotter:
    """The BargeInSpotter for `wake` (its keywords and stop phrases). `trailing_blanks` None or equal to the
    wake word's shares its loaded model; another value loads the model once more with that num_trailing_blanks
    (a spotter option, not a stream one): 0 reports a keyword after one blank frame (40 ms) instead of two.

    `speaking_threshold`: the fallback when no echo canceller runs (docs/echo-cancellation.md): the stop
    phrases' trigger threshold raised to it (raised_thresholds), because without a canceller the assistant's
    own voice fires the default STOP ~30 times per hour of speech (BENCHMARKS.md). The thresholds are part of
    the loaded spotter's keyword graph (sherpa-onnx builds it once per KeywordSpotter; a stream's extra
    keywords cannot override a threshold: the constructor's lines are inserted after them and win), so this
    loads the model once more too, unless the trailing blanks already needed a twin: then it is the same one.
    Wake words keep their thresholds: measured, they did not fire on our own voice."""
    same_blanks = trailing_blanks is None or trailing_blanks == wake.trailing_blanks
    built = dict(source=wake, trailing_blanks=trailing_blanks, speaking_threshold=speaking_threshold)
    if same_blanks and speaking_threshold is None:
        return BargeInSpotter(wake, streams, **built)
    options = dict(wake._options)
    if not same_blanks:
        options["num_trailing_blanks"] = trailing_blanks
    stops = wake._stop_keywords
    if speaking_threshold is not None:
        stops = raised_thresholds(stops, speaking_threshold, float(options["keywords_threshold"]))
    twin = WakeWord(wake.files, wake._keywords, stop_keywords=stops, latency_s=wake.latency_s, **options)
    if speaking_threshold is not None:
        log.info("barge-in spotter without an echo canceller: stop phrases at threshold >= %.2f", speaking_threshold)
    return BargeInSpotter(twin, streams, **built)
