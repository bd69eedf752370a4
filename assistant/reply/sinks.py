"""Where events and replies go: JSON lines or human lines on stdout, and speech sentence by sentence.

Speech starts with the first complete sentence while the model is still writing the rest, so the user
hears the reply about one sentence after the first token instead of after the whole reply.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import numpy as np

from assistant.events import Error, Event, Final, Reply, TimerFinished, TimerStarted, Wake
from assistant.reply.tts import AudioOutput, Synthesizer

log = logging.getLogger(__name__)

# Ends a sentence wherever it appears. ASCII "." is handled apart: "3.14" and "e.g." must not split.
_HARD_STOPS = "。！？!?\n"


def _sentence_end(text: str, start: int) -> int | None:
    """Index just past the first sentence end at or after `start`, or None (wait for more text)."""
    for i in range(start, len(text)):
        ch = text[i]
        if ch in _HARD_STOPS:
            return i + 1
        # A period ends a sentence only once we see what follows it: whitespace, or a closing quote.
        if ch == "." and i + 1 < len(text) and text[i + 1] in " \t\"'”’)":
            return i + 1
    return None


class SentenceSplitter:
    """Cuts streamed text into sentences as soon as each is complete; holds the unfinished tail."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, piece: str) -> list[str]:
        self._buffer += piece
        sentences = []
        while True:
            end = _sentence_end(self._buffer, 0)
            if end is None:
                break
            sentence = self._buffer[:end].strip()
            self._buffer = self._buffer[end:]
            if _speakable(sentence):
                sentences.append(sentence)
        return sentences

    def flush(self) -> str | None:
        rest = self._buffer.strip()
        self._buffer = ""
        return rest if _speakable(rest) else None


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def split_sentences(text: str) -> list[str]:
    """All sentences of a finished text (the streaming splitter run once)."""
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    return sentences + ([rest] if rest else [])


class Speech:
    """Synthesizer + audio output; `speak` blocks (run it in the executor)."""

    def __init__(self, synthesizer: Synthesizer, output: AudioOutput) -> None:
        self.synthesizer = synthesizer
        self.output = output
        self._stop = threading.Event()  # set by interrupt(): nothing more is played until resume()

    def interrupt(self) -> None:
        """Stop playing now (any thread): the sentence playing ends within a slice, queued ones are skipped."""
        self._stop.set()

    def resume(self) -> None:
        """Allow playback again (the daemon calls it at the start of each reply)."""
        self._stop.clear()

    def speak(self, sentence: str) -> float:
        """Synthesize and play one sentence; returns the seconds of audio played."""
        if self._stop.is_set():
            return 0.0
        stream = getattr(self.synthesizer, "stream", None)
        if stream is not None:
            return self._speak_chunks(sentence, stream)
        start = time.perf_counter()
        samples, rate = self.synthesizer.synthesize(sentence)
        synth_ms = (time.perf_counter() - start) * 1000
        if self._stop.is_set():
            return 0.0
        self.output.play(samples, rate, self._stop)
        seconds = len(samples) / rate
        log.debug("tts %s: %.2f s of audio, synthesis %.0f ms: %r", self.synthesizer.name, seconds, synth_ms,
                  sentence)
        return seconds

    def _speak_chunks(self, sentence: str, stream: Callable[[str], Iterator[tuple[np.ndarray, int]]]) -> float:
        """A voice that yields a sentence in chunks (Piper): each chunk plays while the next one is made, so the
        sentence starts after its first chunk's synthesis instead of the whole sentence's."""
        chunks: queue.Queue[Any] = queue.Queue()  # unbounded: at most one sentence's chunks
        finished = threading.Event()  # the player gave up (stop, output error): make no more chunks
        end = object()

        def produce() -> None:
            try:
                for chunk in stream(sentence):
                    if finished.is_set() or self._stop.is_set():
                        break
                    chunks.put(chunk)
            except Exception as exc:  # noqa: BLE001 - handed to the player, which raises it in the caller
                chunks.put(exc)
            chunks.put(end)

        start = time.perf_counter()
        maker = threading.Thread(target=produce, name="tts-chunks", daemon=True)
        maker.start()
        seconds, first_ms, count = 0.0, 0.0, 0
        try:
            while (item := chunks.get()) is not end:
                if isinstance(item, Exception):
                    raise item
                samples, rate = item
                if count == 0:
                    first_ms = (time.perf_counter() - start) * 1000
                count += 1
                if self._stop.is_set():
                    break
                self.output.play(samples, rate, self._stop)
                seconds += len(samples) / rate
        finally:
            finished.set()
        maker.join()
        log.debug("tts %s: %.2f s of audio in %d chunk(s), first after %.0f ms: %r", self.synthesizer.name,
                  seconds, count, first_ms, sentence)
        return seconds

    def close(self) -> None:
        self.output.close()


# The events worth a line without --json, and that line; the others (partials, states...) say nothing.
_READABLE: dict[type[Event], Callable[[Any], str]] = {
    Wake: lambda e: f"[wake {e.label} at {e.t:.2f} s]",
    Final: lambda e: f"you: {e.text}",
    Reply: lambda e: f"assistant: {e.text}",
    TimerFinished: lambda e: f"assistant: {e.text}",
    TimerStarted: lambda e: f"[{e.kind} {e.id} '{e.label}' ends {e.due}]",
    Error: lambda e: f"[{e.stage} error: {e.message}]",
}


class EventWriter:
    """Writes events to stdout: JSON lines (--json), or readable lines for the few that matter."""

    def __init__(self, *, json_lines: bool, stream: TextIO | None = None) -> None:
        self._json = json_lines
        self._stream = stream
        self._write_failed = False

    def __call__(self, event: Event) -> None:
        stream = self._stream or sys.stdout
        if self._json:
            line = event.to_json()
        elif (readable := _READABLE.get(type(event))) is not None:
            line = readable(event)
        else:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            # Reader gone (EPIPE), disk full (ENOSPC), closed stream: the daemon keeps running. Warn once,
            # then quietly, so a full disk does not turn every event into a traceback.
            if not self._write_failed:
                log.warning("cannot write events to stdout (%s); dropping them until it works again", exc)
            else:
                log.debug("event dropped: %s", line)
            self._write_failed = True
        else:
            self._write_failed = False
