"""OpenAI-compatible routes: /v1/models, /v1/chat/completions (plain and SSE), /v1/audio/transcriptions,
/v1/audio/speech. Field names, response objects and error bodies follow OpenAI's API reference, so the official
client and the tools built on it work unchanged. Unknown extra fields are ignored, as OpenAI clients send many.

Why ~400 lines: four routes with OpenAI's exact error shapes; the validation of each field is most of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from assistant.errors import ConfigError
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Turn
from assistant.reply.sinks import split_sentences
from assistant.servers.audio import BadAudio, decode_file, wav_bytes
from assistant.servers.http import HUB, LIMITS, SHARED, WORK, RequestError, client_of
from assistant.servers.shared import transcribe

log = logging.getLogger(__name__)

ASR_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")  # clients that hard-code a name
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
ROLES = ("system", "developer", "user", "assistant")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


async def models(request: web.Request) -> web.Response:
    shared = request.app[SHARED]
    created = int(time.time())
    ids = [shared.model_id]
    if shared.asr is not None:
        ids.append(shared.asr_name)
    if shared.voice is not None:
        ids.append(shared.voice_name)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "edge-assistant"} for name in ids]
    return web.json_response({"object": "list", "data": data})


# -- reading requests -----------------------------------------------------------------------------------


async def read_json(request: web.Request) -> dict[str, Any]:
    limit = request.app[LIMITS].max_body_bytes
    body = await request.read()
    if len(body) > limit:
        raise RequestError(413, f"request body of {len(body)} bytes is larger than the limit of {limit} bytes")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not UTF-8 JSON") from None
    except ValueError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _number(data: dict[str, Any], name: str, default: float | None, lo: float, hi: float, *, lo_open: bool = False
            ) -> float | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(400, f"{name} must be a number, got {value!r}", param=name)
    if (value <= lo if lo_open else value < lo) or value > hi:
        bound = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise RequestError(400, f"{name} must be in {bound}, got {value!r}", param=name)
    return float(value)


def _integer(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{name} must be an integer, got {value!r}", param=name)
    return value


def _text_of(content: Any, where: str) -> str:
    """A message's content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"{where}: only text content parts are supported", param=where)
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(400, f"{where} must be a string or a list of text parts", param=where)


def parse_messages(raw: Any) -> tuple[str | None, list[Turn], str]:
    """(system prompt or None, earlier turns, the question) of OpenAI `messages`."""
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "messages must be a non-empty list of {role, content}", param="messages")
    systems: list[str] = []
    said: list[tuple[str, str]] = []  # (user|assistant, text), consecutive messages of one role joined
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(400, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}",
                               param=f"{where}.role")
        text = _text_of(message.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            systems.append(text)
        elif said and said[-1][0] == role:
            said[-1] = (role, said[-1][1] + "\n" + text)
        else:
            said.append((role, text))
    if not said or said[-1][0] != "user":
        raise RequestError(400, "the last message (after any system message) must have role user", param="messages")
    question = said.pop()[1]
    turns: list[Turn] = []
    pending = ""
    for role, text in said:
        if role == "user":
            pending = text
        else:
            turns.append(Turn(user=pending, assistant=text))
            pending = ""
    if pending:
        turns.append(Turn(user=pending, assistant=""))
    return ("\n".join(systems) if systems else None), turns, question


def _stops(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise RequestError(400, "stop must be a non-empty string or a list of up to 4 of them", param="stop")
    return tuple(stops)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: str | None
    turns: list[Turn]
    question: str
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_chat(data: dict[str, Any], model_id: str, default: Sampling, max_tokens_limit: int) -> ChatRequest:
    model = data.get("model", model_id)
    if model != model_id:
        raise RequestError(404, f"model {model!r} does not exist: this server has {model_id!r} (GET /v1/models)",
                           param="model", code="model_not_found")
    system, turns, question = parse_messages(data.get("messages"))
    max_tokens = _integer(data, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens")
    if max_tokens is not None and not 1 <= max_tokens <= max_tokens_limit:
        raise RequestError(400, f"max_tokens must be in 1..{max_tokens_limit} (servers.limits.max_tokens), got "
                                f"{max_tokens}", param="max_tokens")
    n = data.get("n")
    if n not in (None, 1):
        raise RequestError(400, f"n must be 1 (one choice per request), got {n!r}", param="n")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream must be true or false, got {stream!r}", param="stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object", param="stream_options")
    temperature = _number(data, "temperature", default.temperature, 0.0, 2.0)
    top_p = _number(data, "top_p", default.top_p, 0.0, 1.0, lo_open=True)
    seed = _integer(data, "seed")
    sampling = dataclasses.replace(
        default,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_tokens or min(default.max_new_tokens, max_tokens_limit),
        seed=seed if seed is not None else default.seed,
        greedy=default.greedy and data.get("temperature") is None,
    )
    return ChatRequest(model=model_id, system=system, turns=turns, question=question, sampling=sampling,
                       stop=_stops(data.get("stop")), stream=stream,
                       include_usage=bool(options.get("include_usage", False)))


class StopScanner:
    """Cuts streamed text at the first stop sequence, holding back a tail that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        if not self.stops:
            return text
        # The stop that *ends* first wins (as if the text arrived one character at a time), so the result does
        # not depend on how the reply was cut into pieces.
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)[1]]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    keep = max(keep, size)
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


# -- chat -----------------------------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    shared, work, hub = request.app[SHARED], request.app[WORK], request.app[HUB]
    data = await read_json(request)
    chat = parse_chat(data, shared.model_id, shared.sampling, request.app[LIMITS].max_tokens)
    conversation = shared.chat.fork(chat.turns, system_prompt=chat.system)
    try:
        conversation.prompt_ids(chat.question, chat.sampling)  # a system prompt too long: 400 before any work
    except ConfigError as exc:
        raise RequestError(400, str(exc), param="messages") from None
    with work.ticket(client_of(request)):
        started = time.perf_counter()
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        scanner = StopScanner(chat.stop)
        cancel = threading.Event()
        pieces: list[str] = []
        first_ms: float | None = None

        def produce(cancel: threading.Event) -> Any:
            return conversation.stream(chat.question, chat.sampling, cancel)

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
            body: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                    "model": chat.model,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                body = {**body, "choices": [], "usage": usage}
            return f"data: {_dumps(body)}\n\n".encode()

        response: web.StreamResponse | None = None
        if chat.stream:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                   "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            await response.prepare(request)
            await response.write(chunk({"role": "assistant", "content": ""}))
        try:
            async with contextlib.aclosing(work.iterate(produce, cancel)) as stream:
                async for piece in stream:
                    if first_ms is None:
                        first_ms = (time.perf_counter() - started) * 1000
                    text = scanner.feed(piece)
                    if text:
                        pieces.append(text)
                        if response is not None:
                            await response.write(chunk({"content": text}))
                    if scanner.stopped:
                        break
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client is gone: nothing to tell it
        except Exception as exc:  # noqa: BLE001 - the model failed mid-reply
            log.error("chat completion failed: %s: %s", type(exc).__name__, exc)
            if response is None:
                raise  # not started: the middleware answers 500 with OpenAI's error body
            # Headers are sent: report it in the stream, as OpenAI does, and end it properly.
            body = {"error": {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error",
                              "param": None, "code": None}}
            await response.write(f"data: {_dumps(body)}\n\ndata: [DONE]\n\n".encode())
            await response.write_eof()
            return response
        tail = scanner.flush()
        if tail:
            pieces.append(tail)
            if response is not None:
                await response.write(chunk({"content": tail}))
        stats = conversation.last_stats
        completion = stats.tokens if stats is not None else 0
        prompt = stats.prompt_tokens if stats is not None else 0
        finish = "length" if not scanner.stopped and completion >= chat.sampling.max_new_tokens else "stop"
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        reply = "".join(pieces)
        hub.record("api", chat.question, reply, first_ms, (time.perf_counter() - started) * 1000)
        if response is not None:
            await response.write(chunk({}, finish))
            if chat.include_usage:
                await response.write(chunk({}, usage=usage))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {"id": ident, "object": "chat.completion", "created": created, "model": chat.model,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
             "usage": usage},
            dumps=_dumps,
        )


# -- audio ----------------------------------------------------------------------------------------------


async def transcriptions(request: web.Request) -> web.Response:
    shared, work, limits = request.app[SHARED], request.app[WORK], request.app[LIMITS]
    if shared.asr is None:
        raise RequestError(503, "speech-to-text is not served: the recognizer engine has no per-client streams")
    if not request.content_type.startswith("multipart/"):
        raise RequestError(400, "expected multipart/form-data with a file field (WAV or FLAC)", param="file")
    form = await request.post()
    upload = form.get("file")
    if upload is None or not hasattr(upload, "file"):
        raise RequestError(400, "file: missing (multipart field 'file' with a WAV or FLAC file)", param="file")
    model = form.get("model", shared.asr_name)
    if model not in (shared.asr_name, *ASR_ALIASES):
        raise RequestError(404, f"model {model!r} does not exist: transcription model is {shared.asr_name!r}",
                           param="model", code="model_not_found")
    response_format = form.get("response_format", "json")
    if response_format not in ("json", "text", "verbose_json"):
        raise RequestError(400, f"response_format {response_format!r} not supported: json, text or verbose_json",
                           param="response_format")
    data = upload.file.read()
    with work.ticket(client_of(request)):
        started = time.perf_counter()
        try:
            samples = await work.call(functools.partial(decode_file, max_seconds=limits.max_audio_s), data)
        except BadAudio as exc:
            raise RequestError(400, f"file: {exc}", param="file") from None
        recognizer = shared.asr.fork()
        text = await work.call(transcribe, recognizer, samples, work.gate.hold)
    seconds = len(samples) / 16000
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    body: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        body.update(task="transcribe", duration=round(seconds, 3), language=shared.asr_languages[0],
                    processing_ms=round((time.perf_counter() - started) * 1000, 1))
    return web.json_response(body, dumps=_dumps)


def synthesize_all(voice: Any, text: str, hold: Any) -> tuple[np.ndarray, int]:
    """Speak `text` sentence by sentence (the voice loop may cut in between two); one array at one rate."""
    parts: list[np.ndarray] = []
    rate = 16000
    for sentence in split_sentences(text) or [text]:
        samples, rate = voice.synthesize(sentence)
        parts.append(np.asarray(samples, dtype=np.float32))
        hold()
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), rate


async def speech(request: web.Request) -> web.Response:
    shared, work, limits = request.app[SHARED], request.app[WORK], request.app[LIMITS]
    data = await read_json(request)
    if shared.voice is None:
        raise RequestError(503, "text-to-speech is not served: set tts.engine (espeak, sherpa or piper)")
    text = data.get("input")
    if not isinstance(text, str) or not text.strip():
        raise RequestError(400, "input must be a non-empty string", param="input")
    if len(text) > limits.max_text_chars:
        raise RequestError(400, f"input of {len(text)} characters is longer than servers.limits.max_text_chars = "
                                f"{limits.max_text_chars}", param="input")
    model = data.get("model", shared.voice_name)
    if model not in (shared.voice_name, *TTS_ALIASES):
        raise RequestError(404, f"model {model!r} does not exist: the voice is {shared.voice_name!r}", param="model",
                           code="model_not_found")
    response_format = data.get("response_format", "wav")
    if response_format != "wav":
        raise RequestError(400, f"response_format {response_format!r} not supported: only wav", param="response_format")
    _number(data, "speed", 1.0, 0.25, 4.0)
    with work.ticket(client_of(request)):
        samples, rate = await work.call(synthesize_all, shared.voice, text, work.gate.hold)
    return web.Response(body=wav_bytes(samples, rate), content_type="audio/wav")
