"""The voice assistant's state machine: IDLE -> LISTENING -> THINKING -> SPEAKING -> IDLE, on asyncio.

One coroutine reads the audio source; every chunk goes into a ring of recent audio, then to the wake word
(IDLE) or the recognizer (LISTENING). An endpoint starts the reply task, which runs the LLM in the model
executor and streams its text into the sinks and, sentence by sentence, into the TTS. `_enter` is the only
place the state changes: it logs, emits a state event and tells systemd.

Every model call (KWS, ASR, LLM, TTS) runs in one named ThreadPoolExecutor, so the loop stays free for the
audio source, signals and the watchdog. Is the hop worth it for the per-chunk KWS call? Measured here (JFK
clip, 100 ms chunks, 2 busy shared cores): the spotter takes ~4-5 ms per chunk on average (its work comes in
bursts when a 320 ms window completes), the hop into the pool and back ~0.1 ms, i.e. 2-3% of the call and
~0.1% of a core. Inline, the loop would stall for every call; through the pool it still services the
microphone queue, a SIGTERM and the watchdog meanwhile (onnxruntime releases the GIL). The calls are awaited
one at a time, so chunk order is kept.

The silence gate in front of the spotter is the exception: it runs on the loop (`GatedWakeWord.admit`), and
only a chunk it lets through hops into the pool (`spot`). In room noise the gate stays closed, and then the
hop *was* the idle cost: py-spy on the daemon fed pink noise in real time put ~60% of its CPU in submit, the
worker's wake-up, the self-pipe write back and the second epoll wake-up per chunk (~0.6 ms a chunk, ~0.6% of a
core), against ~20 us of numpy for EnergyGate.update. A silero gate costs ~0.5 ms a chunk of onnxruntime: a
stall the 100 ms audio cadence does not notice, and still cheaper than the hop.

The chunks' own trip from the reader thread to the loop was the next idle cost, so while the gate is closed
and we are idle, a live source may hold quiet chunks back and hand them over a second at a time (after each
chunk `source.hold_quiet_db` says so; audio/handoff.py). A chunk loud enough that it could open the gate still
comes at once, and every chunk still comes, in order, with its input time: the gate, the pre-roll and the
spotter decide exactly as before; only the loop wakes ~1x a second instead of per chunk (BENCHMARKS.md, bench/idle.py
--whole-daemon).

Pacing: a live source (microphone, stdin, --realtime) keeps flowing while the assistant thinks and speaks.
A file read as fast as possible has no clock of its own, so the reader waits for each reply before reading
on: otherwise a second question in the same file would fly by unheard.

Barge-in (live sources only): while THINKING or SPEAKING the spotter keeps listening, for the wake words and
the stop phrases (wake.stop_phrases, the same model and stream). A stop phrase cancels the reply (the LLM
thread sees `cancel`, the speech stops within one output slice) and returns to IDLE; a wake word cancels it
and starts a new LISTENING turn. Both emit `interrupted` with what was cut off; a cancelled reply is never
kept in the chat history. Our own voice must not trigger it: with no echo canceller, the barge-in spotter's
stop phrases fire only above wake.speaking_threshold (`_fit_barge_in`), a detection while SPEAKING whose words
are in what we are saying (or just said) is taken for our echo and ignored, and after playback the wake word
still waits tts.mute_tail_s before listening in IDLE (the fallback, docs/echo-cancellation.md).

Why ~780 lines: the state machine is one class whose states share the same fields (ring, reply task, timers,
barge-in); splitting it would spread one transition table over several files. Next step when it grows: the
timers' clock and the barge-in/echo handling as two helper classes the daemon owns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from assistant.errors import AudioError
from assistant.events import (
    Error,
    Event,
    Final,
    FirstToken,
    Interrupted,
    Partial,
    Reply,
    StateChange,
    TimerCancelled,
    TimerFinished,
    TimerStarted,
    Wake,
)
from assistant.intents.chime import CHIME_RATE, chime
from assistant.intents.handlers import Context
from assistant.intents.timers import Timer, TimerBook
from assistant.llm.sampling import Sampling, sampling_from
from assistant.reply.sinks import SentenceSplitter, Speech, split_sentences
from assistant.settings import Settings
from assistant.wake.spotter import Spotter

log = logging.getLogger(__name__)

RELOAD_WAIT_S = 10.0  # seconds of input a reload waits for a quiet moment before it is swapped in anyway
MODEL_WORKERS = 4  # KWS/ASR, LLM, TTS can overlap (LLM writes while TTS speaks); one spare for a reload
HOLD_MARGIN_DB = 3.0  # a live source holds back only chunks this far under what could open the energy gate


def make_executor() -> ThreadPoolExecutor:
    """The one pool every model call goes through (threads are named so py-spy/top show who is busy)."""
    return ThreadPoolExecutor(max_workers=MODEL_WORKERS, thread_name_prefix="assistant-model")


class State(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


class Chunk(Protocol):
    samples: np.ndarray  # float32 mono at the pipeline rate
    t: float  # seconds of input audio before the first sample


class Recognizer(Protocol):
    def start(self) -> None: ...
    def accept(self, samples: np.ndarray) -> Any: ...  # AsrUpdate(text, changed, endpoint)
    def finish(self) -> str: ...


class Chat(Protocol):
    def stream(
        self, user_text: str, sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str]: ...

    def clear(self) -> None: ...


class Ring(Protocol):
    def push(self, chunk: Any) -> None: ...
    def since(self, t: float) -> np.ndarray: ...


class Notifier(Protocol):
    def ready(self) -> None: ...
    def watchdog(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None: ...


class _NoNotifier:
    def ready(self) -> None: ...
    def watchdog(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None:
        return None


@dataclass(frozen=True)
class Reloaded:
    """What a SIGHUP reload hands to the running daemon (built off the loop, swapped in between chunks)."""

    settings: Settings
    wake: Spotter
    asr: Recognizer
    summary: str = ""  # what changed, for the log line when it is applied
    intents: Any = None  # a rebuilt intents.engine.IntentEngine (None: keep the running one)


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _words(text: str) -> list[str]:
    """Lowercase words (CJK: characters) of a phrase or sentence, for the echo check."""
    out: list[str] = []
    for word in "".join(ch if ch.isalnum() else " " for ch in text.lower()).split():
        out.extend(word if any("\u4e00" <= ch <= "\u9fff" for ch in word) else [word])
    return out


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def _first_detection(result: Any) -> Any:
    """WakeWord.flush() may hand back one detection or a list of them."""
    if isinstance(result, list | tuple):
        return result[0] if result else None
    return result


class Daemon:
    """The state machine and the per-utterance bookkeeping; `run(source)` drives it until the input ends."""

    def __init__(
        self,
        settings: Settings,
        *,
        wake: Spotter,
        asr: Recognizer,
        chat: Chat,
        ring: Ring,
        emit: Callable[[Event], None],
        executor: ThreadPoolExecutor,
        speech: Speech | None = None,
        notifier: Notifier | None = None,
        live: bool = False,
        intents: Any = None,
        timers: TimerBook | None = None,
        start_time: float | None = None,
    ) -> None:
        self.settings = settings
        self.wake = wake
        self.asr = asr
        self.chat = chat
        self.ring = ring
        self.speech = speech
        self.notifier = notifier or _NoNotifier()
        self.live = live
        self._emit_to = emit
        self._executor = executor
        self.state = State.IDLE
        self._t = 0.0  # seconds of input audio consumed so far
        self._listen_from = 0.0  # audio t where the current utterance starts (end of the wake word)
        self._wake_t = 0.0
        self._heard_text = ""
        self._last_reply_t: float | None = None  # audio t when the last reply finished (follow-up window)
        self._mute_until = 0.0  # monotonic s: the wake word ignores the mic until our own voice has faded
        self._reply_task: asyncio.Task[None] | None = None
        self._answering = ""  # the utterance the running reply answers
        self._reply_text: list[str] = []  # the running reply's text so far
        self._spoken: collections.deque[str] = collections.deque(maxlen=3)  # recent sentences, for echo checks
        self._interrupting = False  # the reply task is being cancelled by a barge-in, not by a shutdown
        self.interruptions = 0
        # monotonic time - input time, at its smallest so far: a chunk that waited for the loop arrives late,
        # the earliest arrival is closest to when the audio was recorded (the audio clock of the echo canceller)
        self._clock_offset = float("inf")
        self.aec = self._make_aec()
        self._barge_in = self._fit_barge_in()  # what spots while a reply is live (None: the wake word itself)
        self._pending: Reloaded | None = None
        self._pending_since = 0.0  # input time the pending reload was requested
        self._holding: Any = None  # the live source while run() reads it, when it can hold quiet chunks back
        self.last_wake_wall: str | None = None
        self._status_detail = ""  # what THINKING is answering, for the STATUS line
        self.replies = 0
        self.errors = 0
        # The intent layer (intents.engine.IntentEngine) answers everyday questions before the model; timers
        # and alarms live in `timers` and on this loop (see _timers_start).
        self.intents = intents
        self.timers = timers
        # The timers' clock: wall time for a live source; for a file, `start_time` (default: now) plus the
        # audio time read so far, so a timer set in a recording ends at the right point of the recording.
        self._start_time = start_time
        self._epoch0 = time.time() if start_time is None else start_time
        self._timer_handle: asyncio.TimerHandle | None = None
        self._announcements: asyncio.Queue[tuple[Timer, bool, str]] | None = None
        self._announcer: asyncio.Task[None] | None = None

    def _make_aec(self) -> Any:
        """The echo canceller (audio/aec.py) when the input is live, we speak and speexdsp is installed."""
        output = getattr(self.speech, "output", None)
        if not self.live or output is None or not self.settings.tts.echo_cancel or not hasattr(output, "listener"):
            return None
        from assistant.audio import aec

        if not aec.available():
            level = logging.WARNING if self.settings.tts.echo_cancel is True else logging.INFO
            log.log(level, "no echo canceller (pip install speexdsp): the hold-off and the text check guard our voice")
            return None
        canceller = aec.EchoCanceller()
        output.listener = lambda samples, rate, t: canceller.played(samples, rate, t, self._clock_offset)
        log.info("echo canceller: speex, fed what the speech output plays")
        return canceller

    def _fit_barge_in(self) -> Any:
        """The wake word's barge-in spotter, checked against how this daemon runs: speaking live with no echo
        canceller, the stop phrases need the raised wake.speaking_threshold (the fallback); with a canceller, or
        nothing spoken, their own. pipeline.build_wake builds the right one for the speech it builds; a caller
        that hands in other speech (tests, bench/) gets it rebuilt here (a model load, at start or at a reload)."""
        barge_in = getattr(self.wake, "barge_in", None)
        if not self.live:
            return barge_in  # files read as fast as possible wait for each reply: no barge-in
        from assistant.wake.spotter import BargeInSpotter, barge_in_spotter, fallback_threshold

        fallback = self.speech is not None and self.aec is None
        want = fallback_threshold(self.settings.wake.speaking_threshold) if fallback else None
        if isinstance(barge_in, BargeInSpotter):
            if barge_in.speaking_threshold == want:
                return barge_in
            if want is None and self.settings.wake.barge_in_streams == 0:
                return None  # the raised one-stream twin is not needed: back to the wake word's own stream
            source, streams, blanks = barge_in.source, len(barge_in.streams), barge_in.trailing_blanks
        else:
            source, streams, blanks = getattr(self.wake, "wake", self.wake), 1, None
            if want is None or not hasattr(source, "_stop_keywords"):
                return barge_in  # the wake word's own stream (wake.barge_in_streams 0), or not a WakeWord
        log.info("barge-in spotter rebuilt: %s", f"no echo canceller, stop phrases at threshold >= {want:.2f}"
                 if want is not None else "an echo canceller runs, stop phrases at their own thresholds")
        return barge_in_spotter(source, streams, blanks, want)

    def _input_now(self) -> float:
        """The input time of this moment (any thread): the last chunk's end plus the wall time since."""
        return time.monotonic() - self._clock_offset if self._clock_offset != float("inf") else 0.0

    # -- the one place the state changes -------------------------------------------------------------------

    def _enter(self, state: State, detail: str = "") -> None:
        previous = self.state
        if state is previous:
            return
        self.state = state
        suffix = f" ({detail})" if detail else ""
        log.info("state %s -> %s at %.2f s%s", previous.value, state.value, self._t, suffix)
        self._emit(StateChange(t=self._t, state=state.value, previous=previous.value))
        self._status_detail = detail[:60] if state is State.THINKING else ""
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        """What `systemctl status` shows: the state, what is being answered, the last wake time."""
        status = self.state.value
        if self._status_detail:
            status += f": {self._status_detail}"
        if self.last_wake_wall:
            status += f" (last wake {self.last_wake_wall})"
        return status

    def _emit(self, event: Event) -> None:
        try:
            self._emit_to(event)
        except Exception:  # noqa: BLE001 - a broken sink must not stop the assistant
            log.exception("event sink failed on %s", event.name)

    def _error(self, stage: str, message: str) -> None:
        self.errors += 1
        log.warning("%s error at %.2f s: %s", stage, self._t, message)
        self._emit(Error(t=self._t, stage=stage, message=message))

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- reload (SIGHUP) ----------------------------------------------------------------------------------

    def request_reload(self, reloaded: Reloaded) -> None:
        """Swap in new settings and wake/ASR models at the next chunk boundary while idle and quiet."""
        self._pending = reloaded
        self._pending_since = self._t
        if self._holding is not None:  # a reload is applied at a chunk boundary: let quiet chunks come now
            self._holding.hold_quiet_db = None

    def _apply_reload(self) -> None:
        reloaded = self._pending
        if reloaded is None or self.state is not State.IDLE:
            return
        # A new spotter starts a fresh stream: swapped in while the silence gate is open it would hear only the
        # tail of a wake phrase under way (tests/test_sighup_burst.py lost one so). So wait for the gate to close,
        # at most RELOAD_WAIT_S of input; an ungated spotter has no such signal and is swapped at once.
        speaking = getattr(self.wake, "in_speech", False)
        if speaking and self._t - self._pending_since < RELOAD_WAIT_S:
            return
        self._pending = None
        self.settings = reloaded.settings
        self.wake = reloaded.wake
        self._barge_in = self._fit_barge_in()
        self.asr = reloaded.asr
        if reloaded.intents is not None:
            self.intents = reloaded.intents  # the timers stay: they are in self.timers, not in the engine
        log.info("reloaded config and keywords%s", f": {reloaded.summary}" if reloaded.summary else "")

    # -- audio ------------------------------------------------------------------------------------------

    async def run(self, source: AsyncIterator[Chunk]) -> None:
        """Process the source until it ends, then flush and finish the last utterance. Cancel to stop."""
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        self.notifier.ready()
        self.notifier.status("idle")
        log.info("listening for the wake word (%s input)", "live" if self.live else "file")
        self._timers_start()
        holds = hasattr(source, "hold_quiet_db")  # a live source that can hold quiet chunks back (audio/handoff)
        self._holding = source if holds else None
        try:
            try:
                async for chunk in source:
                    end = chunk.t + len(chunk.samples) / self.settings.audio.sample_rate
                    self._clock_offset = min(self._clock_offset, time.monotonic() - end)
                    if self.aec is not None and self.aec.active(chunk.t):
                        chunk = self.aec.process(chunk)  # our own voice out before anything listens
                    self.ring.push(chunk)
                    self._t = chunk.t + len(chunk.samples) / self.settings.audio.sample_rate
                    self._timers_check()
                    self._apply_reload()
                    await self._on_chunk(chunk)
                    if holds:
                        source.hold_quiet_db = self._hold_quiet_db()  # type: ignore[attr-defined]
                    if not self.live and self._reply_task is not None:
                        await self._finish_reply()
            except AudioError:
                # The input died (a crashed recorder on stdin): answer what was already heard, then report.
                if self._reply_task is not None:
                    await self._finish_reply()
                raise
            await self._end_of_input()
            await self._timers_drain()
        finally:
            watchdog.cancel()
            self._timers_stop()
            if self._reply_task is not None and not self._reply_task.done():
                self._reply_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._reply_task

    def _hold_quiet_db(self) -> float | None:
        """What the source may hold back (audio/handoff.py): quiet chunks, while the only thing that looks at
        them is a closed energy gate: idle, not muted, the gate closed. A chunk HOLD_MARGIN_DB under the gate's
        open_db above the room's floor still comes at once. None: every chunk at once."""
        gate = self.settings.wake.gate
        if (self.state is not State.IDLE or not gate.enabled or gate.kind != "energy" or self._pending is not None
                or getattr(self.wake, "in_speech", True) or time.monotonic() < self._mute_until):
            return None
        return gate.open_db - HOLD_MARGIN_DB

    async def _on_chunk(self, chunk: Chunk) -> None:
        if self._reply_task is not None and self._reply_task.done():
            await self._finish_reply()
        if self.state is State.IDLE:
            await self._spot(chunk)
        elif self.state is State.LISTENING:
            await self._listen(chunk.samples)
        elif self.live and self._reply_task is not None:
            await self._spot_during_reply(chunk)

    async def _spot(self, chunk: Chunk) -> None:
        if self.live and time.monotonic() < self._mute_until:
            return  # our own voice may still be in the room
        detection = await self._detect(chunk)
        if detection is not None and getattr(detection, "kind", "wake") == "stop":
            log.info("stop phrase %r at %.2f s while idle: nothing to stop", detection.label, detection.t)
            return
        if detection is not None:
            await self._on_wake(detection)

    async def _detect(self, chunk: Chunk, wake: Any = None) -> Any:
        """The spotter's verdict on one chunk: the silence gate decides on the loop (a closed gate keeps the chunk
        in its pre-roll ring), the model runs in the pool. None for no hit, and for a failure, which is reported
        as a wake error while the daemon (and any reply in progress) goes on with a clean spotter."""
        wake = wake or self.wake
        try:
            if not wake.admit(chunk):
                return None
            return await self._call(wake.spot, chunk)
        except Exception as exc:  # noqa: BLE001 - keep the daemon alive; the spotter restarts clean
            log.exception("wake word failed in state %s", self.state.value)
            self._error("wake", f"{type(exc).__name__}: {exc}")
            await self._reset_wake()
            return None

    async def _spot_during_reply(self, chunk: Chunk) -> None:
        """Barge-in: the spotter hears the room while we think or speak; a hit cuts the reply off. Its own
        barge-in spotter when it has one (staggered streams that report sooner: wake/spotter.py)."""
        detection = await self._detect(chunk, self._barge_in)
        if detection is None or self._reply_task is None or self._reply_task.done():
            return
        if self.state is State.SPEAKING and self._is_own_echo(detection):
            log.info("%s %r at %.2f s is in what we are saying: taken for our own echo, ignored",
                     getattr(detection, "kind", "wake"), detection.label, detection.t)
            return
        await self._interrupt(detection)

    def _is_own_echo(self, detection: Any) -> bool:
        """No echo canceller: a phrase we are saying ourselves is not the user's (text fallback)."""
        phrase = _words(getattr(detection, "keyword_text", "") or detection.label)
        return bool(phrase) and any(_contains(_words(sentence), phrase) for sentence in self._spoken)

    async def _interrupt(self, detection: Any) -> None:
        kind = getattr(detection, "kind", "wake")
        state = self.state.value
        question, reply = self._answering, "".join(self._reply_text).strip()
        log.info("barge-in: %s %r at %.2f s cuts off the reply (%s, %d characters so far)", kind,
                 detection.label, detection.t, state, len(reply))
        self._interrupting = True
        if self.speech is not None:
            self.speech.interrupt()  # first: the sound stops within one output slice
        self.interruptions += 1
        self._emit(Interrupted(t=detection.t, by=kind, label=detection.label, state=state, question=question,
                               reply=reply))
        task = self._reply_task
        assert task is not None
        task.cancel()  # the reply's own cleanup cancels the LLM thread and returns to IDLE
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._interrupting = False
            self._reply_task = None
        if kind == "wake":
            await self._on_wake(detection)

    async def _on_wake(self, detection: Any) -> None:
        self.last_wake_wall = time.strftime("%H:%M:%S")
        window = self.settings.llm.follow_up_window_s
        follow_up = self._last_reply_t is not None and detection.t - self._last_reply_t <= window
        if not follow_up:
            self.chat.clear()
        log.info("wake %r at %.2f s (keyword ends %.2f s)%s", detection.label, detection.t, detection.t_end,
                 ", follow-up: history kept" if follow_up else "")
        self._emit(Wake(t=detection.t, label=detection.label, keyword=detection.keyword_text,
                        t_end=detection.t_end))
        self._wake_t = detection.t
        self._listen_from = max(0.0, detection.t_end - self.settings.asr.pre_roll_s)
        self._heard_text = ""
        try:
            await self._call(self.asr.start)
        except Exception as exc:  # noqa: BLE001
            log.exception("ASR failed to start")
            self._error("asr", f"{type(exc).__name__}: {exc}")
            await self._reset_wake()
            return
        self._enter(State.LISTENING, detection.label)
        # Whatever was said after the keyword (and before the spotter was sure) is already in the ring.
        await self._listen(self.ring.since(self._listen_from))

    async def _listen(self, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        try:
            update = await self._call(self.asr.accept, samples)
        except Exception as exc:  # noqa: BLE001
            log.exception("ASR failed")
            self._error("asr", f"{type(exc).__name__}: {exc}")
            await self._to_idle()
            return
        if update.changed and update.text:
            self._heard_text = update.text
            self._emit(Partial(t=self._t, text=update.text))
        elapsed = self._t - self._listen_from
        asr = self.settings.asr
        if update.endpoint:
            await self._final(await self._call(self.asr.finish), "endpoint")
        elif elapsed >= asr.max_utterance_s:
            await self._final(await self._call(self.asr.finish), "max_length")
        elif not self._heard_text and elapsed >= asr.no_speech_timeout_s:
            self._error("asr", f"no speech within {asr.no_speech_timeout_s:g} s of the wake word")
            await self._to_idle()

    async def _final(self, text: str, reason: str) -> None:
        text = " ".join(text.split())
        self._emit(Final(t=self._t, text=text, reason=reason))
        if not text:
            self._error("asr", "empty transcript")
            await self._to_idle()
            return
        log.info("heard %r (%s at %.2f s)", text, reason, self._t)
        if self.live:
            await self._reset_wake()  # a fresh stream hears barge-in from here (the spotter skipped LISTENING)
        self._answering, self._reply_text = text, []
        self._enter(State.THINKING, text)
        self._reply_task = asyncio.create_task(self._respond(text, self._t, time.perf_counter()), name="reply")

    async def _end_of_input(self) -> None:
        """Flush the spotter and recognizer (tail padding inside them) and answer what was still pending."""
        log.info("end of input at %.2f s", self._t)
        if self._reply_task is not None:
            await self._finish_reply()
        if self.state is State.IDLE:
            try:
                detection = _first_detection(await self._call(self.wake.flush))
            except Exception as exc:  # noqa: BLE001
                log.exception("wake word flush failed")
                self._error("wake", f"{type(exc).__name__}: {exc}")
                detection = None
            if detection is not None:
                await self._on_wake(detection)
        if self.state is State.LISTENING:
            try:
                text = await self._call(self.asr.finish)
            except Exception as exc:  # noqa: BLE001
                log.exception("ASR flush failed")
                self._error("asr", f"{type(exc).__name__}: {exc}")
                await self._to_idle()
                return
            await self._final(text, "end_of_input")
        if self._reply_task is not None:
            await self._finish_reply()

    # -- reply -------------------------------------------------------------------------------------------

    async def _finish_reply(self) -> None:
        task = self._reply_task
        if task is None:
            return
        try:
            await task
        finally:
            self._reply_task = None

    async def _reply(self, text: str, endpoint_t: float, endpoint_wall: float) -> None:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        sampling = sampling_from(self.settings.llm)

        def generate() -> None:
            # Runs in the executor: the model's own loop; hands text pieces back to the event loop.
            try:
                for piece in self.chat.stream(text, sampling, cancel):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                    if cancel.is_set():
                        break
                loop.call_soon_threadsafe(pieces.put_nowait, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
                loop.call_soon_threadsafe(pieces.put_nowait, exc)

        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(sentences), name="speak") if self.speech else None
        splitter = SentenceSplitter()
        reply: list[str] = self._reply_text
        llm_done = False
        if self.speech is not None:
            self.speech.resume()
        first_ms: float | None = None
        worker = loop.run_in_executor(self._executor, generate)
        timeout_s = self.settings.llm.reply_timeout_s
        deadline = loop.time() + timeout_s
        try:
            while True:
                # asyncio.timeout_at, not wait_for: on 3.11 wait_for can swallow a cancellation that races
                # with a piece arriving, and SIGTERM must always win.
                try:
                    async with asyncio.timeout_at(deadline):
                        piece = await pieces.get()
                except TimeoutError:
                    raise TimeoutError(f"reply timed out after {timeout_s:g} s") from None
                if piece is None:
                    llm_done = True
                    break
                if isinstance(piece, BaseException):
                    raise piece
                if first_ms is None:
                    first_ms = (time.perf_counter() - endpoint_wall) * 1000
                    self._emit(FirstToken(t=self._t, latency_ms=first_ms))
                reply.append(piece)
                for sentence in splitter.feed(piece):
                    sentences.put_nowait(sentence)
            rest = splitter.flush()
            if rest:
                sentences.put_nowait(rest)
            sentences.put_nowait(None)
            if speaker is not None:
                await speaker
            done_ms = (time.perf_counter() - endpoint_wall) * 1000
            answer = "".join(reply).strip()
            self.replies += 1
            log.info("reply: %r", answer)
            self._emit(Reply(t=self._t, text=answer, latency_ms=done_ms))
            log.info(
                "latency: wake->endpoint %.0f ms (audio), endpoint->first token %s ms, endpoint->reply done "
                "%.0f ms",
                (endpoint_t - self._wake_t) * 1000,
                f"{first_ms:.0f}" if first_ms is not None else "-",
                done_ms,
            )
            self._last_reply_t = self._t
            warm_up = getattr(self.chat, "warm_up", None)
            if warm_up is not None:
                # The next follow-up then prefills only its question (llm/chat.py); errors are logged there.
                await self._call(warm_up)
        except asyncio.CancelledError:
            cancel.set()
            if not self._interrupting:
                self._error("llm", "reply cancelled")
            elif llm_done and getattr(self.chat, "forget_last", None) is not None:
                # Generated in full but cut off while spoken: what was not heard is not history either.
                self.chat.forget_last(text)
            raise
        except Exception as exc:  # noqa: BLE001 - one bad reply must not stop the assistant
            cancel.set()
            trace = None if isinstance(exc, TimeoutError) else exc  # a timeout is not a bug: no traceback
            log.error("reply failed: %s: %s", type(exc).__name__, exc, exc_info=trace)
            self._error("llm", f"{type(exc).__name__}: {exc}")
        finally:
            cancel.set()
            if speaker is not None and not speaker.done():
                speaker.cancel()
                with contextlib.suppress(BaseException):
                    await speaker
            # A wedged model thread may never see `cancel`: wait a moment for it, never forever.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(worker), 1.0)
            await self._to_idle()

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        assert self.speech is not None
        try:
            while (sentence := await sentences.get()) is not None:
                if self.state is State.THINKING:
                    self._enter(State.SPEAKING)
                self._spoken.append(sentence)
                try:
                    await self._call(self.speech.speak, sentence)
                except Exception as exc:  # noqa: BLE001 - TTS trouble: the reply is still printed
                    log.error("tts failed: %s: %s", type(exc).__name__, exc)
                    self._error("tts", f"{type(exc).__name__}: {exc}")
                    return
        finally:
            self._mute_until = time.monotonic() + self.settings.tts.mute_tail_s

    # -- intents, timers and alarms ------------------------------------------------------------------------

    def _now(self) -> float:
        """Epoch seconds on the timers' clock (wall time live; start_time + audio time for a file)."""
        if self.live and self._start_time is None:
            return time.time()
        return self._epoch0 + self._t

    async def _respond(self, text: str, endpoint_t: float, endpoint_wall: float) -> None:
        """The intent layer first; no match (or no intent layer): the language model, as before."""
        answer = None
        if self.intents is not None:
            # On the loop, not in the pool: the timer book is only ever touched from the loop (no lock), and a
            # match takes 1-15 ms (bench/intents.py), well inside the 100 ms audio cadence.
            book = self.timers if self.timers is not None else TimerBook()
            answer = self.intents.answer(text, Context(self._now(), book, "en"))
        if answer is None:
            await self._reply(text, endpoint_t, endpoint_wall)
        else:
            await self._intent_reply(answer, endpoint_wall)

    async def _intent_reply(self, answer: Any, endpoint_wall: float) -> None:
        try:
            for timer in answer.started:
                self._emit(TimerStarted(t=self._t, id=timer.id, label=timer.label, due=_iso(timer.due),
                                        kind=timer.kind))
            for timer in answer.cancelled:
                self._emit(TimerCancelled(t=self._t, id=timer.id, label=timer.label, due=_iso(timer.due),
                                          kind=timer.kind))
            self._timers_schedule()
            if self.speech is not None:
                self._enter(State.SPEAKING)
                try:
                    for sentence in split_sentences(answer.text):
                        await self._call(self.speech.speak, sentence)
                except Exception as exc:  # noqa: BLE001 - TTS trouble: the reply is still printed
                    log.error("tts failed: %s: %s", type(exc).__name__, exc)
                    self._error("tts", f"{type(exc).__name__}: {exc}")
                finally:
                    self._mute_until = time.monotonic() + self.settings.tts.mute_tail_s
            self.replies += 1
            done_ms = (time.perf_counter() - endpoint_wall) * 1000
            log.info("reply (%s): %r", answer.intent, answer.text)
            self._emit(Reply(t=self._t, text=answer.text, latency_ms=done_ms, intent=answer.intent))
            self._last_reply_t = self._t
        finally:
            await self._to_idle()

    def _timers_start(self) -> None:
        """Restore the saved timers: one that ended while nothing ran is announced once, as missed."""
        if self.timers is None:
            return
        self._announcements = asyncio.Queue()
        self._announcer = asyncio.create_task(self._announce_loop(), name="announcer")
        for timer in self.timers.restore(self._now()):
            self._timer_finished(timer, missed=True)
        self._timers_schedule()

    def _timers_check(self) -> None:
        if self.timers is None:
            return
        for timer in self.timers.pop_due(self._now()):
            self._timer_finished(timer, missed=False)
        self._timers_schedule()

    def _timers_schedule(self) -> None:
        """Live: one loop.call_at for the next timer to end (file inputs are checked at each chunk)."""
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        due = self.timers.next_due() if self.timers is not None else None
        if due is None or not (self.live and self._start_time is None):
            return
        loop = asyncio.get_running_loop()
        self._timer_handle = loop.call_at(loop.time() + max(0.0, due - time.time()), self._timers_check)

    def _timer_finished(self, timer: Timer, *, missed: bool) -> None:
        text = ""
        if self.intents is not None:
            try:
                text = self.intents.announcement(timer, missed=missed)
            except Exception:  # noqa: BLE001 - a broken template must not lose the timer's end
                log.exception("announcement template failed for %s", timer.id)
        text = text or f"{timer.label}"
        log.info("%s %s (%s) ended%s: %r", timer.kind, timer.id, timer.label, " while stopped" if missed else "",
                 text)
        self._emit(TimerFinished(t=self._t, id=timer.id, label=timer.label, due=_iso(timer.due), kind=timer.kind,
                                 missed=missed, text=text))
        if self._announcements is not None:
            self._announcements.put_nowait((timer, missed, text))

    async def _announce_loop(self) -> None:
        """Chime + announcement, one at a time, after any reply in progress (queued, never over it)."""
        assert self._announcements is not None
        while True:
            timer, missed, text = await self._announcements.get()
            try:
                while self._reply_task is not None and not self._reply_task.done():
                    await asyncio.wait({self._reply_task})
                if self.speech is not None:
                    self._mute_until = float("inf")  # the chime and our own voice must not wake us
                    try:
                        await self._call(self.speech.output.play, chime(CHIME_RATE), CHIME_RATE)
                        await self._call(self.speech.speak, text)
                    except Exception as exc:  # noqa: BLE001
                        log.error("announcement failed: %s: %s", type(exc).__name__, exc)
                        self._error("tts", f"{type(exc).__name__}: {exc}")
                    finally:
                        self._mute_until = time.monotonic() + self.settings.tts.mute_tail_s
            finally:
                self._announcements.task_done()

    async def _timers_drain(self) -> None:
        if self._announcements is not None:
            await self._announcements.join()

    def _timers_stop(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        if self._announcer is not None:
            self._announcer.cancel()

    # -- back to idle ------------------------------------------------------------------------------------

    async def _reset_wake(self) -> None:
        barge_in = self._barge_in
        try:
            await self._call(self.wake.reset)
            if barge_in is not None:
                await self._call(barge_in.reset)
        except Exception:  # noqa: BLE001
            log.exception("wake word reset failed")

    async def _to_idle(self) -> None:
        # Per-utterance state is reset here and only here.
        self._heard_text = ""
        await self._reset_wake()
        self._enter(State.IDLE)

    # -- systemd watchdog ----------------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval() if self.settings.service.watchdog else None
        if not interval:
            return
        # Pinged from the loop itself: a stuck loop stops the pings and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval / 2)
