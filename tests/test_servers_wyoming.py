"""Wyoming end to end over 127.0.0.1 with the `wyoming` package's own AsyncTcpClient, as Home Assistant calls it,
plus hostile clients on raw sockets: each gets an error event naming the problem and the server stays up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.wake import Detect, Detection, NotDetected

from speechdata.assets import JFK_TEXT
from speechdata.audio import load_clip as load_mono16k
from speechdata.audio import silence
from speechdata.wer import wer
from tests.servers_fixture import JFK, Served, served  # noqa: F401

JFK_SAID = "and so my fellow americans " + JFK_TEXT


def pcm(samples: np.ndarray, width: int = 2, channels: int = 1) -> bytes:
    scale = float(2 ** (8 * width - 1) - 1)
    ints = (np.clip(samples, -1, 1) * scale).astype(f"<i{width}")
    return np.repeat(ints[:, None], channels, axis=1).tobytes()


async def send_audio(client: AsyncTcpClient, samples: np.ndarray, rate: int = 16000, width: int = 2,
                     channels: int = 1) -> None:
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = 1024
    for i in range(0, len(samples), step):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                            audio=pcm(samples[i : i + step], width, channels)).event())
    await client.write_event(AudioStop().event())


async def read_until(client: AsyncTcpClient, *types: str, timeout: float = 120) -> list[Event]:
    """Events up to and including the first of `types`."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed before {types}: {[e.type for e in events]}"
            events.append(event)
            if event.type in types:
                return events


def run(srv: Served, coro: Any) -> Any:
    return srv.call(coro, timeout=300)


def client(srv: Served) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", srv.wyoming_port)


def test_describe_lists_every_program(served: Served) -> None:
    async def go() -> Info:
        async with client(served) as c:
            await c.write_event(Describe().event())
            return Info.from_event((await read_until(c, "info"))[-1])

    info = run(served, go())
    assert info.asr[0].installed and info.asr[0].supports_transcript_streaming
    assert info.asr[0].models[0].languages == ["en"] and info.asr[0].version  # the English KWS model
    assert info.tts[0].supports_synthesize_streaming and info.tts[0].voices[0].name == "espeak"
    assert info.handle[0].supports_handled_streaming and info.handle[0].models[0].name == served.shared.model_id
    phrases = {m.name: m.phrase for m in info.wake[0].models}
    assert phrases == {"fellow_americans": "FELLOW AMERICANS", "HEY JARVIS": "HEY JARVIS"}


@pytest.mark.parametrize(("rate", "width", "channels"), [(16000, 2, 1), (44100, 4, 2)])
def test_jfk_transcript_streamed_and_final(served: Served, rate: int, width: int, channels: int) -> None:
    from assistant.audio.resample import resample

    audio = load_mono16k(JFK)
    audio = audio if rate == 16000 else resample(audio, 16000, rate)

    async def go() -> list[Event]:
        async with client(served) as c:
            await c.write_event(Transcribe(language="en").event())
            await send_audio(c, audio, rate, width, channels)
            return await read_until(c, "transcript")

    events = run(served, go())
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript-stop", "transcript"]
    final = Transcript.from_event(events[-1]).text
    assert wer(JFK_SAID, final) < 0.3, final
    streamed = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert types.count("transcript-chunk") >= 2 and final.startswith(streamed[:10])


def test_wake_phrase_detected_and_silence_not(served: Served) -> None:
    async def detect(samples: np.ndarray, names: list[str] | None = None) -> list[Event]:
        async with client(served) as c:
            await c.write_event(Detect(names=names).event())
            await send_audio(c, samples)
            return await read_until(c, "not-detected", "detection")

    events = run(served, detect(np.concatenate([silence(1.0), load_mono16k(JFK)])))
    detection = Detection.from_event(events[-1])
    assert detection.name == "fellow_americans"
    assert 2000 < detection.timestamp < 5500  # "fellow Americans" ends ~2.3 s into JFK, plus the 1 s of silence
    assert run(served, detect(silence(2.0)))[-1].type == NotDetected().event().type
    # A names filter that excludes the phrase: not detected.
    assert run(served, detect(load_mono16k(JFK), ["HEY JARVIS"]))[-1].type == "not-detected"


def _decode(events: list[Event]) -> tuple[np.ndarray, int]:
    start = next(e for e in events if e.type == "audio-start")
    audio = b"".join(e.payload or b"" for e in events if e.type == "audio-chunk")
    return np.frombuffer(audio, "<i2").astype(np.float32) / 32768, start.data["rate"]


def test_text_to_audio_plain_and_streamed(served: Served) -> None:
    async def plain() -> list[Event]:
        async with client(served) as c:
            await c.write_event(Synthesize(text="Hello there. How are you today?").event())
            return await read_until(c, "audio-stop")

    samples, rate = _decode(run(served, plain()))
    assert rate > 8000 and len(samples) / rate > 1.0 and np.abs(samples).max() > 0.05

    async def streamed() -> list[Event]:
        async with client(served) as c:
            await c.write_event(SynthesizeStart().event())
            for piece in ("Hello there. How", " are you", " today?"):
                await c.write_event(SynthesizeChunk(text=piece).event())
            await c.write_event(Synthesize(text="Hello there. How are you today?").event())  # compat duplicate
            await c.write_event(SynthesizeStop().event())
            return await read_until(c, "synthesize-stopped")

    events = run(served, streamed())
    types = [e.type for e in events]
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1
    assert types.index("audio-stop") < types.index("synthesize-stopped")
    again, _ = _decode(events)
    assert abs(len(again) - len(samples)) / len(samples) < 0.5  # the same text, once (duplicate ignored)


def test_question_handled_with_history_per_conversation(served: Served) -> None:
    async def ask(text: str, conversation: str) -> list[Event]:
        async with client(served) as c:
            await c.write_event(Transcript(text=text, context={"conversation_id": conversation}).event())
            return await read_until(c, "handled", "not-handled")

    events = run(served, ask("What is the capital of France?", "kitchen"))
    types = [e.type for e in events]
    assert types[0] == "handled-start" and types[-2:] == ["handled-stop", "handled"]
    handled = Handled.from_event(events[-1])
    chunks = "".join(e.data["text"] for e in events if e.type == "handled-chunk")
    assert handled.text == chunks.strip() and handled.context["conversation_id"] == "kitchen"
    run(served, ask("And of Spain?", "kitchen"))
    run(served, ask("Hello", "bedroom"))
    answerer = served.servers.answerer
    kitchen = [turn.user for turn in answerer.conversation("kitchen").history]
    assert kitchen == ["What is the capital of France?", "And of Spain?"]
    assert [turn.user for turn in answerer.conversation("bedroom").history] == ["Hello"]
    assert run(served, ask("   ", "kitchen"))[-1].type == "not-handled"


async def _raw(srv: Served, data: bytes, *, close_write: bool = True, timeout: float = 60) -> list[dict[str, Any]]:
    """Send raw bytes, read event headers back until the server closes (or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.wyoming_port)
    writer.write(data)
    await writer.drain()
    if close_write:
        writer.write_eof()
    events = []
    try:
        async with asyncio.timeout(timeout):
            while line := await reader.readline():
                header = json.loads(line)
                for key in ("data_length", "payload_length"):
                    if header.get(key):
                        extra = await reader.readexactly(header[key])
                        if key == "data_length":
                            header["data"] = {**header.get("data", {}), **json.loads(extra)}
                events.append(header)
    finally:
        writer.close()
    return events


def _line(event: Event) -> bytes:
    body = {"type": event.type, "data": event.data}
    payload = event.payload or b""
    if payload:
        body["payload_length"] = len(payload)
    return json.dumps(body).encode() + b"\n" + payload


def test_hostile_clients_get_clear_errors_and_the_server_stays_up(served: Served) -> None:
    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=b"\x00\x00" * 1600).event()

    async def go() -> None:
        # audio-chunk with no audio-start: an error, and the connection still answers.
        events = await _raw(served, _line(chunk) + _line(Describe().event()))
        assert events[0]["type"] == "error" and events[0]["data"]["code"] == "no-audio-start"
        assert events[1]["type"] == "info"
        # Wrong rates and widths.
        for rate, width in ((0, 2), (16000, 3), ("fast", 2)):
            start = Event(type="audio-start", data={"rate": rate, "width": width, "channels": 1})
            events = await _raw(served, _line(Transcribe().event()) + _line(start))
            assert events[0]["type"] == "error" and events[0]["data"]["code"] == "bad-audio", events
        # Garbage JSON header: error, then closed.
        events = await _raw(served, b"{this is not json\n", close_write=False)
        assert [e["type"] for e in events] == ["error"] and "not JSON" in events[0]["data"]["text"]
        events = await _raw(served, b'["a list"]\n', close_write=False)
        assert events[0]["type"] == "error" and '"type"' in events[0]["data"]["text"]
        # payload_length larger than what follows.
        events = await _raw(served, b'{"type": "audio-chunk", "payload_length": 100000}\n' + b"\x00" * 10)
        assert events[0]["type"] == "error" and "10 of 100000" in events[0]["data"]["text"]
        events = await _raw(served, b'{"type": "audio-chunk", "payload_length": 999999999999}\n', close_write=False)
        assert events[0]["data"]["code"] == "too-large"
        # A client that vanishes mid-stream (no audio-stop, no goodbye).
        reader, writer = await asyncio.open_connection("127.0.0.1", served.wyoming_port)
        writer.write(_line(Transcribe().event()) + _line(AudioStart(rate=16000, width=2, channels=1).event()))
        for _ in range(10):
            writer.write(_line(chunk))
        await writer.drain()
        writer.transport.abort()
        # 100 connections opened and left idle; the 101st is served.
        idle = [await asyncio.open_connection("127.0.0.1", served.wyoming_port) for _ in range(100)]
        try:
            async with client(served) as c:
                await c.write_event(Describe().event())
                assert (await read_until(c, "info"))[-1].type == "info"
                await c.write_event(Transcript(text="still there?").event())
                assert (await read_until(c, "handled", "not-handled"))[-1].type == "handled"
        finally:
            for _, w in idle:
                w.close()

    run(served, go())


def test_idle_timeout_and_connection_limit(tiny_llm: Path, tmp_path: Path) -> None:
    from tests.servers_fixture import serve, server_settings

    settings = server_settings(tiny_llm, tmp_path, **{"servers.limits.idle_timeout_s": 2.0,
                                                      "servers.limits.max_connections": 3,
                                                      "servers.http.enabled": False})
    for srv in serve(settings):
        events = srv.call(_raw(srv, b'{"type": "audio-chunk", "payload_length": 1000}\n', close_write=False))
        assert events[0]["data"]["code"] == "timeout"

        async def crowd(srv: Served) -> list[dict[str, Any]]:
            idle = [await asyncio.open_connection("127.0.0.1", srv.wyoming_port) for _ in range(3)]
            try:
                async with asyncio.timeout(60):  # until the server has accepted all three
                    while len(srv.servers.wyoming.connections) < 3:
                        await asyncio.sleep(0.01)
                return await _raw(srv, b"", close_write=False)  # refused before it says anything
            finally:
                for _, writer in idle:
                    writer.close()

        events = srv.call(crowd(srv))
        assert events and events[0]["type"] == "error" and events[0]["data"]["code"] == "busy"
