"""The OpenAI-compatible API end to end: the official `openai` client against 127.0.0.1, real models."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from speechdata.assets import JFK_TEXT
from speechdata.audio import load_clip as load_mono16k
from speechdata.wer import wer
from tests.servers_fixture import JFK, Served, serve, server_settings  # noqa: F401

JFK_SAID = "and so my fellow americans " + JFK_TEXT


@pytest.fixture(scope="module")
def served(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from serve(server_settings(tiny_llm, tmp_path_factory.mktemp("http"), **{"servers.wyoming.enabled": False}))


def client(srv: Served, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.http + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0,
                         timeout=120, **kw)


def raw(srv: Served, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(srv.http + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def error_of(body: bytes) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"], err
    return err


def test_models_lists_the_llm_asr_and_voice(served: Served) -> None:
    ids = [m.id for m in client(served).models.list().data]
    assert ids[0] == served.shared.model_id
    assert served.shared.asr_name in ids and "espeak" in ids


def test_chat_plain_and_streamed_agree_and_count_tokens(served: Served) -> None:
    c = client(served)
    ask = dict(model=served.shared.model_id, messages=[{"role": "user", "content": "What is the capital of France?"}],
               temperature=0, max_tokens=12)
    plain = c.chat.completions.create(**ask)
    reply = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.usage.prompt_tokens > 5 and 1 <= plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    assert plain.choices[0].finish_reason in ("stop", "length")
    chunks = list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == reply
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_seed_reproduces_and_history_is_used(served: Served) -> None:
    c = client(served)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "tell me a story"}]
    a = c.chat.completions.create(model=served.shared.model_id, messages=messages, seed=7, temperature=0.9,
                                  top_p=0.9, max_tokens=10)
    b = c.chat.completions.create(model=served.shared.model_id, messages=messages, seed=7, temperature=0.9,
                                  top_p=0.9, max_tokens=10)
    assert a.choices[0].message.content == b.choices[0].message.content
    alone = c.chat.completions.create(model=served.shared.model_id, messages=messages[-1:], seed=7,
                                      temperature=0.9, top_p=0.9, max_tokens=10)
    assert a.usage.prompt_tokens > alone.usage.prompt_tokens  # the system prompt and the turn are in the prompt


def test_stop_sequence_cuts_the_reply(served: Served) -> None:
    c = client(served)
    ask = dict(model=served.shared.model_id, messages=[{"role": "user", "content": "count to ten"}], temperature=0,
               max_tokens=16)
    full = c.chat.completions.create(**ask).choices[0].message.content
    assert len(full) >= 4
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = c.chat.completions.create(**ask, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**ask, stop=stop,
                                                                                               stream=True))
    assert streamed == full[: full.find(stop)]


def test_chinese_reply_streams_whole_characters(served: Served) -> None:
    """Every SSE event is valid UTF-8 by itself and the pieces join to the plain reply: a character split over
    two tokens is never sent half in one event."""
    found_multibyte = False
    for seed in range(12):
        body = {"model": served.shared.model_id, "messages": [{"role": "user", "content": "你好，请介绍一下北京。"}],
                "seed": seed, "temperature": 1.0, "max_tokens": 16}
        status, data = raw(served, "/v1/chat/completions", json.dumps({**body, "stream": True}).encode())
        assert status == 200
        events = [e for e in data.split(b"\n\n") if e.strip()]
        assert events[-1] == b"data: [DONE]"
        pieces = []
        for event in events[:-1]:
            assert event.startswith(b"data: ")
            chunk = json.loads(event[6:].decode("utf-8", errors="strict"))
            pieces.append(chunk["choices"][0]["delta"].get("content") or "")
        streamed = "".join(pieces)
        status, plain = raw(served, "/v1/chat/completions", json.dumps(body).encode())
        assert json.loads(plain)["choices"][0]["message"]["content"] == streamed
        if any(len(p.encode("utf-8")) > len(p) for p in pieces if "\ufffd" not in p):
            found_multibyte = True
            break
    assert found_multibyte, "no reply with a multi-byte character in 12 seeds"


def test_bad_requests_get_openai_errors(served: Served) -> None:
    status, body = raw(served, "/v1/chat/completions", b'{"messages": [')
    assert status == 400 and "not valid JSON" in error_of(body)["message"]
    status, body = raw(served, "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and "JSON object" in error_of(body)["message"]
    status, body = raw(served, "/v1/chat/completions", json.dumps({"messages": []}).encode())
    assert status == 400 and error_of(body)["param"] == "messages"
    status, body = raw(served, "/v1/chat/completions",
                       json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode())
    assert status == 400 and "role" in error_of(body)["message"]
    status, body = raw(served, "/v1/chat/completions", b"\xff\xfe not utf-8")
    assert status == 400
    c = client(served)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="gpt-17", messages=user)
    assert "gpt-17" in str(info.value) and info.value.code == "model_not_found"
    for bad in (0, -3, 10**9):
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model=served.shared.model_id, messages=user, max_tokens=bad)
        assert "max_tokens" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=served.shared.model_id, messages=user, temperature=7)
    too_big = json.dumps({"messages": [{"role": "user", "content": "x" * 1_100_000}]}).encode()
    status, body = raw(served, "/v1/chat/completions", too_big)
    assert status == 413 and error_of(body)["code"] == "request_too_large"
    # The server is still fine after all that.
    ok = c.chat.completions.create(model=served.shared.model_id, messages=user, max_tokens=4)
    assert ok.usage.completion_tokens >= 1


def test_jfk_transcription_any_rate_and_channels(served: Served, tmp_path: Path) -> None:
    c = client(served)
    with open(JFK, "rb") as fh:
        text = c.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", fh)).text
    assert wer(JFK_SAID, text) < 0.3, text
    # The same clip as 44.1 kHz stereo WAV gives the same words.
    from assistant.audio.resample import resample

    stereo = np.stack([resample(load_mono16k(JFK), 16000, 44100)] * 2, axis=1)
    wav = tmp_path / "jfk-44k-stereo.wav"
    sf.write(str(wav), stereo, 44100, subtype="PCM_16")
    with open(wav, "rb") as fh:
        again = c.audio.transcriptions.create(model=served.shared.asr_name, file=("jfk.wav", fh)).text
    assert wer(JFK_SAID, again) < 0.3, again


def test_bad_uploads_are_400s(served: Served) -> None:
    c = client(served)
    for name, data, fragment in (("empty.wav", b"", "empty"), ("noise.wav", b"RIFF\x00\x00junkjunkjunk", "decode"),
                                 ("header.wav", _silent_wav(0), "no samples")):
        with pytest.raises(openai.BadRequestError) as info:
            c.audio.transcriptions.create(model="whisper-1", file=(name, io.BytesIO(data)))
        assert fragment in str(info.value), (name, str(info.value))


def _silent_wav(frames: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(frames, np.float32), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_speech_returns_a_wav_that_decodes(served: Served) -> None:
    c = client(served)
    audio = c.audio.speech.create(model="tts-1", voice="alloy", input="Hello there. How are you?",
                                  response_format="wav")
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="float32")
    assert rate > 8000 and len(samples) / rate > 0.5 and np.abs(samples).max() > 0.05
    with pytest.raises(openai.BadRequestError):
        c.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="mp3")
    with pytest.raises(openai.BadRequestError):
        c.audio.speech.create(model="tts-1", voice="alloy", input="")


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_busy_is_refused_at_once_and_disconnect_cancels(served: Served) -> None:
    """While the voice loop holds the gate, an admitted job waits; the client's next one is refused at once
    (per-client limit 2 -> third is 429); a streamed client that goes away frees its slot without finishing."""
    work, gate = served.servers.work, served.servers.work.gate
    gate.voice(True)  # the voice loop is "thinking": network jobs pause
    results: list[Any] = []
    try:
        body = {"model": served.shared.model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        threads = [threading.Thread(target=lambda: results.append(raw(served, "/v1/chat/completions",
                                                                      json.dumps(body).encode())))
                   for _ in range(2)]
        for t in threads:
            t.start()
        _wait_for(lambda: work.jobs == 2, "two admitted jobs")
        started = time.monotonic()
        status, data = raw(served, "/v1/chat/completions", json.dumps(body).encode())
        assert status == 429 and error_of(data)["code"] == "rate_limit_exceeded"
        assert time.monotonic() - started < 30  # at once, not after the held jobs
    finally:
        gate.voice(False)
    for t in threads:
        t.join(120)
    assert [r[0] for r in results] == [200, 200]
    # A streamed request whose client disconnects after the first chunk: the job ends without completing.
    import http.client

    gate.voice(True)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", served.servers.ports["http"], timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True, "max_tokens": 16}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(6) == b"data: "  # the role chunk: the job is admitted and waiting
        done_before = work.done
        assert work.jobs == 1
        conn.sock.close()
        conn.close()
        _wait_for(lambda: work.jobs == 0, "the abandoned job to end")
        assert work.done == done_before + 1
    finally:
        gate.voice(False)


def test_queue_full_is_503(tiny_llm: Path, tmp_path: Path) -> None:
    settings = server_settings(tiny_llm, tmp_path, **{"servers.limits.queue": 0, "servers.wyoming.enabled": False})
    for srv in serve(settings):
        work = srv.servers.work
        work.gate.voice(True)
        try:
            body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
            held = threading.Thread(target=raw, args=(srv, "/v1/chat/completions", body))
            held.start()
            _wait_for(lambda w=work: w.jobs == 1, "the admitted job")
            status, data = raw(srv, "/v1/chat/completions", body)
            assert status == 503 and "busy" in error_of(data)["message"]
        finally:
            work.gate.voice(False)
        held.join(120)


def test_token_is_required_when_configured(tiny_llm: Path, tmp_path: Path) -> None:
    settings = server_settings(tiny_llm, tmp_path, **{"servers.token": "s3cret", "servers.wyoming.enabled": False})
    for srv in serve(settings):
        user = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.AuthenticationError):
            client(srv, api_key="wrong").chat.completions.create(model=srv.shared.model_id, messages=user)
        status, body = raw(srv, "/v1/chat/completions", b"{}")
        assert status == 401 and "missing bearer token" in error_of(body)["message"]
        ok = client(srv, api_key="s3cret").chat.completions.create(model=srv.shared.model_id, messages=user,
                                                                   max_tokens=2)
        assert ok.usage.completion_tokens >= 1


def test_truncated_body_and_vanished_client_leave_the_server_up(served: Served) -> None:
    """A body shorter than its Content-Length, then the client gone: nothing answers it, the next request works."""
    import socket

    port = served.servers.ports["http"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"messages\": [")
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(65536)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
    ok = client(served).chat.completions.create(model=served.shared.model_id,
                                                messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ok.usage.completion_tokens >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab北京\n ", max_size=40), st.lists(st.text(alphabet="ab北京\n ", min_size=1, max_size=3),
                                                          max_size=3), st.data())
def test_stop_scanner_matches_a_plain_find(text: str, stops: list[str], data: st.DataObject) -> None:
    """Any split of the stream gives what one character at a time gives: the text before the stop that ends
    first (the model would have been stopped there)."""
    from assistant.servers.openai_api import StopScanner

    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    scanner = StopScanner(stops)
    out = ""
    for piece in pieces:
        out += scanner.feed(piece)
        if scanner.stopped:
            break
    out += scanner.flush()
    expected = text
    for end in range(1, len(text) + 1):
        ending = [end - len(s) for s in stops if text[:end].endswith(s)]
        if ending:
            expected = text[: min(ending)]
            break
    assert out == expected
