"""Shared by the server tests: real models (tiny exported MiniMind, the English KWS model as wake word and weak
recognizer, espeak-ng as the voice) served in-process on 127.0.0.1 ports chosen by the OS, from a background
event loop, so the tests can call them with real clients (openai, wyoming) from the test thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from speechdata.assets import AUDIO, KWS_EN

JFK = AUDIO / "en" / "whisper-jfk.flac"


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    servers: Any
    settings: Any
    shared: Any

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.servers.ports['http']}"

    @property
    def wyoming_port(self) -> int:
        return self.servers.ports["wyoming"]

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def server_settings(llm: Path, workdir: Path, **extra: Any) -> Any:
    from assistant.settings import load_settings

    keywords = workdir / "keywords.txt"
    keywords.write_text("FELLOW AMERICANS @fellow_americans\nHEY JARVIS\n", encoding="utf-8")
    overrides = {
        "llm.model_dir": llm,
        "llm.max_new_tokens": 16,
        "llm.threads": 1,
        "wake.model_dir": KWS_EN,
        "wake.keywords_file": keywords,
        "tts.engine": "espeak",
        "servers.http.enabled": True,
        "servers.http.port": 0,
        "servers.wyoming.enabled": True,
        "servers.wyoming.port": 0,
        **extra,
    }
    return load_settings(None, overrides)



def serve(settings: Any) -> Iterator[Served]:
    """Load the models once, start the servers on a loop thread, yield, stop them."""
    from assistant.pipeline import build_shared, load_keyword_list
    from assistant.servers.hub import EventHub
    from assistant.servers.runner import start_servers
    from assistant.servers.work import VoiceGate

    shared = build_shared(settings, load_keyword_list(settings), None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-servers", daemon=True)
    thread.start()
    hub = EventHub(VoiceGate(settings.servers.limits.voice_hold_s), voice=False)
    started: Future = asyncio.run_coroutine_threadsafe(start_servers(settings, shared, hub), loop)
    servers = started.result(120)
    try:
        yield Served(loop=loop, servers=servers, settings=settings, shared=shared)
    finally:
        asyncio.run_coroutine_threadsafe(servers.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def served(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = server_settings(tiny_llm, tmp_path_factory.mktemp("served"))
    yield from serve(settings)
