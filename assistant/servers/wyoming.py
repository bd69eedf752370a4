"""Home Assistant's Wyoming protocol on one TCP port: wake, asr, tts and handle, all listed in `info`.

Events are the `wyoming` package's own classes and writer (the library Home Assistant's integration uses).
Events are *read* here rather than with `wyoming.event.async_read_event`, because that reader turns every bad
input (garbage JSON, a header without "type") into a silent disconnect and waits forever for a payload_length
that never arrives: here each of those gets an `error` event naming the problem, payloads are bounded by
servers.limits.max_upload_bytes, and a silent connection is closed after servers.limits.idle_timeout_s.

Each connection has its own state: the audio format of its stream, its own recognizer or spotter stream forked
off the shared models, its own partial transcript. Audio of any rate/width/channels is made 16 kHz mono at the
edge (servers/audio.py).

Why ~520 lines: one handler per Wyoming program (wake, asr, tts, handle) plus the bounded event reader they share;
the per-connection state they share is what keeps them in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
    WakeModel,
    WakeProgram,
)
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped
from wyoming.version import __version__ as WYOMING_VERSION
from wyoming.wake import Detect, Detection, NotDetected

from assistant.audio.chunk import SAMPLE_RATE
from assistant.audio.chunk import AudioChunk as PipelineChunk
from assistant.audio.resample import Resampler
from assistant.reply.sinks import SentenceSplitter
from assistant.servers.audio import BadAudio, check_format, pcm16, pcm_to_float
from assistant.servers.shared import Answerer, Shared
from assistant.servers.work import Busy, ModelWork
from assistant.settings import Settings

log = logging.getLogger(__name__)

ATTRIBUTION = Attribution(name="edge-assistant", url="")  # no public home page yet
VERSION = "0.1.0"
HEADER_LIMIT = 64 * 1024  # bytes of one JSON header line
FEED_S = 0.2  # audio buffered before a model step: tiny client chunks would cost a pool hop each
AUDIO_CHUNK_S = 0.5  # seconds of synthesized audio per audio-chunk event


class ProtocolError(Exception):
    """Bad input on a connection: sent back as an error event; `fatal` closes the connection afterwards."""

    def __init__(self, message: str, code: str = "bad-request", *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event, None at a clean end of stream; ProtocolError (fatal) for anything malformed."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise ProtocolError("connection closed in the middle of an event header", fatal=True) from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"event header longer than {HEADER_LIMIT} bytes", fatal=True) from None
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"event header is not JSON ({exc}): {line[:80]!r}", fatal=True) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(f'event header needs a "type" string: {line[:80]!r}', fatal=True)
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError(f"event {header['type']}: data must be an object", fatal=True)
    lengths = []
    for key in ("data_length", "payload_length"):
        value = header.get(key) or 0
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError(f"event {header['type']}: {key} must be a non-negative integer", fatal=True)
        if value > max_bytes:
            raise ProtocolError(f"event {header['type']}: {key} {value} exceeds servers.limits.max_upload_bytes = "
                                f"{max_bytes}", code="too-large", fatal=True)
        lengths.append(value)
    try:
        if lengths[0]:
            extra = json.loads(await reader.readexactly(lengths[0]))
            if not isinstance(extra, dict):
                raise ProtocolError(f"event {header['type']}: data is not a JSON object", fatal=True)
            data = {**data, **extra}
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"event {header['type']}: connection closed after {len(exc.partial)} of "
                            f"{exc.expected} announced bytes", fatal=True) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"event {header['type']}: data is not JSON ({exc})", fatal=True) from None
    return Event(type=header["type"], data=data, payload=payload)


@dataclass
class AudioStream:
    """One audio-start..audio-stop stream of a connection."""

    purpose: str  # "transcribe" or "detect"
    rate: int
    width: int
    channels: int
    model: Any  # the forked recognizer or spotter
    names: list[str] | None = None  # detect: labels wanted (None: all)
    language: str | None = None
    pending: list[np.ndarray] | None = None  # 16 kHz samples not yet fed
    pending_n: int = 0
    bytes_in: int = 0
    t: float = 0.0  # seconds of 16 kHz audio fed so far
    sent_text: str = ""  # transcript-chunk text already sent
    detected: int = 0
    resampler: Resampler | None = None  # stateful: no seams at chunk boundaries


def _about(name: str, description: str | None) -> dict[str, Any]:
    """The fields every Wyoming program, model and voice states: all of ours are installed, at this version."""
    return {"name": name, "description": description, "attribution": ATTRIBUTION, "installed": True,
            "version": VERSION}


def build_info(shared: Shared) -> Info:
    info = Info(handle=[HandleProgram(
        **_about("edge-assistant-handle", "answers with the intents, then MiniMind (one history per conversation id)"),
        models=[HandleModel(**_about(shared.model_id, "MiniMind"), languages=list(shared.languages))],
        supports_handled_streaming=True,
    )])
    if shared.asr is not None:
        info.asr.append(AsrProgram(
            **_about("edge-assistant-asr", "sherpa-onnx streaming transducer"),
            models=[AsrModel(**_about(shared.asr_name, None), languages=list(shared.asr_languages))],
            supports_transcript_streaming=True,
        ))
    if shared.voice is not None:
        info.tts.append(TtsProgram(
            **_about("edge-assistant-tts", f"{shared.voice_name} voice"),
            voices=[TtsVoice(**_about(shared.voice_name, None), languages=list(shared.voice_languages))],
            supports_synthesize_streaming=True,
        ))
    if shared.wake is not None:
        info.wake.append(WakeProgram(
            **_about("edge-assistant-wake", "sherpa-onnx keyword spotter; wake words from the keywords file"),
            models=[WakeModel(**_about(label, phrase), languages=list(shared.wake_languages), phrase=phrase)
                    for label, phrase in shared.wake_phrases.items()],
        ))
    return info


class Connection:
    """One client's events, in order; its stream state lives here and dies with it."""

    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.shared = server.shared
        self.work = server.work
        self.limits = server.work.limits
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else "local"
        self.stream: AudioStream | None = None
        self.next_purpose = "transcribe"
        self.next_names: list[str] | None = None
        self.next_language: str | None = None
        self.synth_session: dict[str, Any] | None = None  # synthesize-start .. -stop
        self.conversation_id = uuid.uuid4().hex  # the handle history of this connection by default

    async def write(self, eventable: Any) -> None:
        await async_write_event(eventable.event(), self.writer)

    async def run(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.limits.idle_timeout_s):
                        event = await read_event(self.reader, self.limits.max_upload_bytes)
                except TimeoutError:
                    raise ProtocolError(f"no complete event for {self.limits.idle_timeout_s:g} s "
                                        "(servers.limits.idle_timeout_s): closing", code="timeout",
                                        fatal=True) from None
                if event is None:
                    return
                try:
                    await self.handle(event)
                except ProtocolError as exc:
                    if exc.fatal:
                        raise
                    log.info("wyoming %s: %s", self.client, exc)
                    self.stream = None
                    await self.write(Error(text=str(exc), code=exc.code))
                except Busy as exc:
                    self.stream = None
                    await self.write(Error(text=str(exc), code="busy"))
        except ProtocolError as exc:
            log.info("wyoming %s: %s", self.client, exc)
            with contextlib.suppress(Exception):
                await self.write(Error(text=str(exc), code=exc.code))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("wyoming %s: connection lost", self.client)
        except Exception as exc:  # noqa: BLE001 - one bad connection must not take the server down
            log.exception("wyoming %s: failed", self.client)
            with contextlib.suppress(Exception):
                await self.write(Error(text=f"internal error: {type(exc).__name__}: {exc}", code="internal"))

    async def handle(self, event: Event) -> None:
        kind = event.type
        try:
            if Describe.is_type(kind):
                await async_write_event(self.server.info.event(), self.writer)
            elif Transcribe.is_type(kind):
                request = Transcribe.from_event(event)
                self.next_purpose, self.next_language = "transcribe", request.language
            elif Detect.is_type(kind):
                self.next_purpose, self.next_names = "detect", Detect.from_event(event).names
            elif AudioStart.is_type(kind):
                await self.audio_start(AudioStart.from_event(event))
            elif AudioChunk.is_type(kind):
                await self.audio_chunk(event)
            elif AudioStop.is_type(kind):
                await self.audio_stop()
            elif Synthesize.is_type(kind):
                if self.synth_session is None:  # inside a streaming session, the full text is a duplicate
                    await self.synthesize(Synthesize.from_event(event).text)
            elif SynthesizeStart.is_type(kind):
                self.synth_session = {"splitter": SentenceSplitter(), "rate": None}
            elif SynthesizeChunk.is_type(kind):
                await self.synthesize_chunk(SynthesizeChunk.from_event(event).text)
            elif SynthesizeStop.is_type(kind):
                await self.synthesize_stop()
            elif Transcript.is_type(kind):
                transcript = Transcript.from_event(event)
                await self.answer(transcript.text, transcript.context)
            elif kind == "ping":
                await async_write_event(Event(type="pong", data=event.data), self.writer)
            else:
                raise ProtocolError(f"event type {kind!r} is not served here (send describe for the list)",
                                    code="unsupported")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"event {kind}: missing or malformed field ({exc})") from None

    # -- audio in: transcribe or detect --------------------------------------------------------------------

    async def audio_start(self, start: AudioStart) -> None:
        try:
            rate, width, channels = check_format(start.rate, start.width, start.channels)
        except BadAudio as exc:
            raise ProtocolError(f"audio-start: {exc}", code="bad-audio") from None
        purpose = self.next_purpose
        if purpose == "detect":
            if self.shared.wake is None:
                raise ProtocolError("wake word detection is not served (no keywords file)", code="unsupported")
            model = self.shared.wake.fork()
        else:
            if self.shared.asr is None:
                raise ProtocolError("speech-to-text is not served by this recognizer engine", code="unsupported")
            model = self.shared.asr.fork()
            model.start()
            await self.write(TranscriptStart(language=self.next_language))
        self.stream = AudioStream(purpose=purpose, rate=rate, width=width, channels=channels, model=model,
                                  names=self.next_names, language=self.next_language, pending=[])
        self.next_purpose, self.next_names = "transcribe", None

    async def audio_chunk(self, event: Event) -> None:
        stream = self.stream
        if stream is None:
            raise ProtocolError("audio-chunk without audio-start: send audio-start first", code="no-audio-start")
        if not event.payload:
            return
        chunk = AudioChunk.from_event(event)
        try:
            rate, width, channels = check_format(chunk.rate, chunk.width, chunk.channels)
        except BadAudio as exc:
            raise ProtocolError(f"audio-chunk: {exc}", code="bad-audio") from None
        stream.bytes_in += len(chunk.audio)
        if stream.bytes_in > self.limits.max_upload_bytes:
            raise ProtocolError("audio stream exceeds servers.limits.max_upload_bytes = "
                                f"{self.limits.max_upload_bytes}", code="too-large")
        if stream.resampler is None or stream.rate != rate:
            stream.rate, stream.resampler = rate, Resampler(rate, SAMPLE_RATE)  # a stream may change rate
        samples = stream.resampler.process(pcm_to_float(chunk.audio, width, channels))
        if stream.t + (stream.pending_n + len(samples)) / SAMPLE_RATE > self.limits.max_audio_s:
            raise ProtocolError(f"audio stream longer than servers.limits.max_audio_s = {self.limits.max_audio_s:g} s",
                                code="too-large")
        assert stream.pending is not None
        stream.pending.append(samples)
        stream.pending_n += len(samples)
        if stream.pending_n >= FEED_S * SAMPLE_RATE:
            await self.feed(stream)

    async def feed(self, stream: AudioStream) -> None:
        assert stream.pending is not None
        if not stream.pending_n:
            return
        samples = np.concatenate(stream.pending)
        stream.pending, stream.pending_n = [], 0
        t = stream.t
        stream.t += len(samples) / SAMPLE_RATE
        with self.work.ticket(self.client):
            if stream.purpose == "detect":
                detection = await self.work.call(stream.model.spot, PipelineChunk(samples=samples, t=t))
                if detection is not None and (not stream.names or detection.label in stream.names):
                    stream.detected += 1
                    await self.write(Detection(name=detection.label, timestamp=int(detection.t * 1000)))
            else:
                update = await self.work.call(stream.model.accept, samples)
                if update.changed:
                    await self.send_delta(stream, update.text)

    async def send_delta(self, stream: AudioStream, text: str) -> None:
        """transcript-chunk with the new text, when the hypothesis only grew (a revision waits for the end)."""
        if text.startswith(stream.sent_text) and len(text) > len(stream.sent_text):
            await self.write(TranscriptChunk(text=text[len(stream.sent_text) :]))
            stream.sent_text = text

    async def audio_stop(self) -> None:
        stream = self.stream
        if stream is None:
            raise ProtocolError("audio-stop without audio-start", code="no-audio-start")
        if stream.resampler is not None and stream.pending is not None:
            stream.pending.append(stream.resampler.process(np.zeros(0, np.float32), final=True))
            stream.pending_n += len(stream.pending[-1])
        await self.feed(stream)
        self.stream = None
        with self.work.ticket(self.client):
            if stream.purpose == "detect":
                detection = await self.work.call(stream.model.flush)
                if detection is not None and (not stream.names or detection.label in stream.names):
                    stream.detected += 1
                    await self.write(Detection(name=detection.label, timestamp=int(detection.t * 1000)))
                if not stream.detected:
                    await self.write(NotDetected())
                return
            text = await self.work.call(stream.model.finish)
        await self.send_delta(stream, text)
        await self.write(TranscriptStop())
        await self.write(Transcript(text=text, language=stream.language))
        log.info("wyoming %s: transcribed %.1f s: %r", self.client, stream.t, text)

    # -- tts -----------------------------------------------------------------------------------------------

    def _check_text(self, text: str) -> None:
        if self.shared.voice is None:
            raise ProtocolError("text-to-speech is not served: set tts.engine", code="unsupported")
        if len(text) > self.limits.max_text_chars:
            raise ProtocolError(f"text of {len(text)} characters is longer than servers.limits.max_text_chars = "
                                f"{self.limits.max_text_chars}", code="too-large")

    async def speak(self, sentence: str, started: bool) -> int:
        """Synthesize one sentence and send it as audio-chunks (audio-start first unless `started`)."""
        with self.work.ticket(self.client):
            samples, rate = await self.work.call(self.shared.voice.synthesize, sentence)
        if not started:
            await self.write(AudioStart(rate=rate, width=2, channels=1))
        step = int(AUDIO_CHUNK_S * rate)
        for i in range(0, len(samples), step):
            await self.write(AudioChunk(rate=rate, width=2, channels=1, audio=pcm16(samples[i : i + step])))
        return rate

    async def synthesize(self, text: str) -> None:
        self._check_text(text)
        if not text.strip():
            raise ProtocolError("synthesize: empty text", code="bad-request")
        splitter = SentenceSplitter()
        sentences = splitter.feed(text)
        rest = splitter.flush()
        started = False
        for sentence in sentences + ([rest] if rest else []) or [text]:
            await self.speak(sentence, started)
            started = True
        await self.write(AudioStop())

    async def synthesize_chunk(self, text: str) -> None:
        session = self.synth_session
        if session is None:
            raise ProtocolError("synthesize-chunk without synthesize-start", code="bad-request")
        self._check_text(text)
        for sentence in session["splitter"].feed(text):
            session["rate"] = await self.speak(sentence, session["rate"] is not None)

    async def synthesize_stop(self) -> None:
        session, self.synth_session = self.synth_session, None
        if session is None:
            raise ProtocolError("synthesize-stop without synthesize-start", code="bad-request")
        rest = session["splitter"].flush()
        if rest:
            session["rate"] = await self.speak(rest, session["rate"] is not None)
        if session["rate"] is not None:
            await self.write(AudioStop())
        await self.write(SynthesizeStopped())

    # -- handle --------------------------------------------------------------------------------------------

    async def answer(self, text: str, context: dict[str, Any] | None) -> None:
        context = dict(context or {})
        conversation_id = str(context.get("conversation_id") or self.conversation_id)
        context["conversation_id"] = conversation_id
        if not text.strip():
            await self.write(NotHandled(text="nothing was said", context=context))
            return
        if len(text) > self.limits.max_text_chars:
            raise ProtocolError(f"transcript longer than servers.limits.max_text_chars = {self.limits.max_text_chars}",
                                code="too-large")
        answerer: Answerer = self.server.answerer
        started = time.perf_counter()
        pieces: list[str] = []
        first_ms: float | None = None
        with self.work.ticket(self.client):
            await self.write(HandledStart(context=context))

            def produce(cancel: threading.Event) -> Any:
                return answerer.answer(text, conversation_id, cancel)

            try:
                async with contextlib.aclosing(self.work.iterate(produce)) as stream:
                    async for piece in stream:
                        if first_ms is None:
                            first_ms = (time.perf_counter() - started) * 1000
                        pieces.append(piece)
                        await self.write(HandledChunk(text=piece))
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - the model failed: not handled, the connection lives on
                log.error("wyoming %s: answer failed: %s: %s", self.client, type(exc).__name__, exc)
                await self.write(HandledStop())
                await self.write(NotHandled(text=f"{type(exc).__name__}: {exc}", context=context))
                return
        reply = "".join(pieces).strip()
        await self.write(HandledStop())
        await self.write(Handled(text=reply, context=context))
        self.server.hub_record(text, reply, first_ms, (time.perf_counter() - started) * 1000)


class WyomingServer:
    def __init__(self, settings: Settings, shared: Shared, work: ModelWork, answerer: Answerer, hub: Any) -> None:
        self.settings = settings
        self.shared = shared
        self.work = work
        self.answerer = answerer
        self.hub = hub
        self.info = build_info(shared)
        self.connections: set[asyncio.Task[None]] = set()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._zeroconf: Any = None

    def hub_record(self, heard: str, reply: str, first_ms: float | None, total_ms: float) -> None:
        if self.hub is not None:
            self.hub.record("wyoming", heard, reply, first_ms, total_ms)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.work.limits.max_connections:
            log.warning("wyoming: refusing a connection: %d open (servers.limits.max_connections)",
                        len(self.connections))
            with contextlib.suppress(Exception):
                await async_write_event(Error(text="too many connections", code="busy").event(), writer)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(self, reader, writer).run()
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host=host, port=port, limit=HEADER_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on tcp://%s:%d (wyoming %s: %s)", shown, self.port, WYOMING_VERSION,
                 ", ".join(kind for kind in ("asr", "tts", "wake", "handle") if getattr(self.info, kind)))
        if self.settings.servers.wyoming.zeroconf:
            from wyoming.zeroconf import HomeAssistantZeroconf

            # A wildcard bind (all interfaces, only by the user's choice) lets zeroconf pick the address to advertise.
            self._zeroconf = HomeAssistantZeroconf(port=self.port, host=None if _is_wildcard(host) else host)
            await self._zeroconf.register_server()
            log.info("zeroconf: advertising _wyoming._tcp on port %d", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf._aiozc.async_close()


async def start_wyoming(settings: Settings, shared: Shared, work: ModelWork, answerer: Answerer,
                        hub: Any = None) -> WyomingServer:
    server = WyomingServer(settings, shared, work, answerer, hub)
    await server.start(settings.servers.wyoming.host, settings.servers.wyoming.port)
    return server


def _is_wildcard(host: str) -> bool:
    """True for the unspecified address of either family (listen on every interface)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name
