"""The daemon in-process on real models and real speech: faults, timeouts, follow-ups, cancelling, muting."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import pipeline
from assistant.audio.chunk import AudioChunk
from assistant.audio.sources import open_source
from assistant.daemon import Reloaded, State
from assistant.events import Error, Final, Reply, StateChange, Wake
from assistant.llm.chat import Conversation
from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer
from assistant.settings import load_settings
from speechdata.assets import JFK, KWS_EN, LEOPARD
from speechdata.audio import load_clip, silence, write_wav
from tests.conftest import (
    DAEMON_TIMEOUT_S,
    Models,
    build_daemon,
    daemon_settings,
    event_names,
    require,
    run_daemon,
)


class FlakyModel(MiniMindOnnx):
    """The real model, except that its first `failures` generations raise (fault injection)."""

    failures = 1

    def generate(
        self, prompt_ids: Sequence[int], sampling: Sampling, cancel: threading.Event | None = None, sequence=None
    ) -> Iterator[int]:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("injected LLM failure")
        yield from super().generate(prompt_ids, sampling, cancel, sequence)


class CountingWake:
    """Wraps the real spotter (a wake.spotter.Spotter) and counts what it was fed."""

    def __init__(self, wake: Any) -> None:
        self.wake = wake
        self.accepted = 0
        self.resets = 0

    @property
    def labels(self) -> list[str]:
        return self.wake.labels

    def admit(self, chunk: Any) -> bool:
        return self.wake.admit(chunk)

    def spot(self, chunk: Any) -> Any:
        self.accepted += 1
        return self.wake.spot(chunk)

    def accept(self, chunk: Any) -> Any:
        return self.spot(chunk) if self.admit(chunk) else None

    def reset(self) -> None:
        self.resets += 1
        self.wake.reset()

    def flush(self) -> Any:
        return self.wake.flush()


def test_llm_exception_is_an_error_event_and_the_next_utterance_is_answered(
    models: Models, tiny_llm: Path, jfk_twice: Path
) -> None:
    flaky = FlakyModel(tiny_llm, threads=1)
    chat = Conversation(flaky, Tokenizer.from_dir(tiny_llm))
    events, daemon = run_daemon(models, jfk_twice, chat=chat)
    assert event_names(events) == [
        "wake",
        "state:listening",
        "final",
        "state:thinking",
        "error",
        "state:idle",
        "wake",
        "state:listening",
        "final",
        "state:thinking",
        "first_token",
        "reply",
        "state:idle",
    ]
    (error,) = [e for e in events if isinstance(e, Error)]
    assert error.stage == "llm" and "injected LLM failure" in error.message
    assert daemon.errors == 1 and daemon.replies == 1
    assert daemon.state is State.IDLE


def test_follow_up_within_the_window_keeps_the_history(
    models: Models, keywords_file: Path, tiny_llm: Path, jfk_twice: Path
) -> None:
    chat = models.chat
    settings = daemon_settings(keywords_file, tiny_llm, **{"llm.follow_up_window_s": 60.0})
    events, _ = run_daemon(models, jfk_twice, settings=settings)
    assert len([e for e in events if isinstance(e, Reply)]) == 2
    assert len(chat.history) == 2
    settings = daemon_settings(keywords_file, tiny_llm, **{"llm.follow_up_window_s": 0.0})
    events, _ = run_daemon(models, jfk_twice, settings=settings)
    assert len([e for e in events if isinstance(e, Reply)]) == 2
    assert len(chat.history) == 1  # the second wake came too late: a fresh conversation


def test_wake_then_silence_times_out_back_to_idle(models: Models, tmp_path: Path) -> None:
    # "And so, my fellow Americans," then nothing: no question follows the wake word.
    head = load_clip(require(JFK))[: int(2.6 * 16000)]
    clip = write_wav(tmp_path / "wake-then-silence.wav", head, silence(8.0))
    settings = models.settings
    settings = dataclasses.replace(settings, asr=dataclasses.replace(settings.asr, no_speech_timeout_s=3.0))
    events, daemon = run_daemon(models, clip, settings=settings)
    assert [e.name for e in events if isinstance(e, Wake)] == ["wake"]
    assert not [e for e in events if isinstance(e, Reply)]
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].stage == "asr"
    assert daemon.state is State.IDLE
    # The spotter was reset on the way back to idle.
    assert events[-1] == StateChange(t=events[-1].t, state="idle", previous="listening")


def test_cancel_mid_reply_stops_the_model_and_reports_it(models: Models, keywords_file: Path, tiny_llm: Path) -> None:
    settings = daemon_settings(keywords_file, tiny_llm, **{"llm.max_new_tokens": 400})
    with build_daemon(models, settings=settings) as (daemon, events):

        async def main() -> None:
            task = asyncio.create_task(daemon.run(open_source(str(require(JFK)))))
            for _ in range(int(DAEMON_TIMEOUT_S / 0.01)):
                if daemon.state is State.THINKING and any(e.name == "first_token" for e in events):
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)

        asyncio.run(main())
    errors = [e for e in events if isinstance(e, Error)]
    assert [e.message for e in errors] == ["reply cancelled"]
    assert not [e for e in events if isinstance(e, Reply)]
    assert models.chat.last_stats.cancelled
    assert models.chat.last_stats.tokens < 400


def test_a_failing_spotter_is_reported_and_the_daemon_keeps_reading(models: Models) -> None:
    class BrokenOnce(CountingWake):
        def spot(self, chunk: Any) -> Any:
            if self.accepted == 0:
                self.accepted += 1
                raise RuntimeError("injected KWS failure")
            return super().spot(chunk)

    wake = BrokenOnce(models.wake)
    events, daemon = run_daemon(models, require(JFK), wake=wake)
    assert [e.stage for e in events if isinstance(e, Error)] == ["wake"]
    assert [e.label for e in events if isinstance(e, Wake)] == ["FELLOW AMERICANS"]
    assert daemon.replies == 1


def test_live_input_does_not_feed_the_spotter_while_our_voice_fades(models: Models) -> None:
    wake = CountingWake(models.wake)
    leopard = load_clip(require(LEOPARD))

    async def chunks() -> AsyncIterator[AudioChunk]:
        for i in range(20):
            yield AudioChunk(samples=leopard[i * 1600 : (i + 1) * 1600], t=i * 0.1)

    with build_daemon(models, wake=wake, live=True) as (daemon, _):
        daemon._mute_until = float("inf")  # as left by the end of a spoken reply  # noqa: SLF001
        asyncio.run(asyncio.wait_for(daemon.run(chunks()), DAEMON_TIMEOUT_S))
    assert wake.accepted == 0


def test_reload_swaps_keywords_between_chunks(models: Models, tmp_path: Path) -> None:
    settings = models.settings
    other = tmp_path / "other.txt"
    other.write_text("GOSPEL\n", encoding="utf-8")
    new_settings = load_settings(
        None,
        {
            "wake.keywords_file": other,
            "wake.model_dir": KWS_EN,
            "asr.model_dir": KWS_EN,
            "llm.model_dir": settings.llm.model_dir,
            "llm.max_new_tokens": 12,
        },
    )
    keywords = pipeline.load_keyword_list(new_settings)
    reloaded = Reloaded(
        settings=new_settings, wake=pipeline.build_wake(new_settings, keywords), asr=models.asr
    )
    with build_daemon(models) as (daemon, events):
        daemon.request_reload(reloaded)
        asyncio.run(asyncio.wait_for(daemon.run(open_source(str(require(LEOPARD)))), DAEMON_TIMEOUT_S))
    assert [e.label for e in events if isinstance(e, Wake)] == ["GOSPEL"]
    assert daemon.settings is new_settings


def test_event_json_lines() -> None:
    assert Wake(t=2.80001, label="HEY", keyword="HEY", t_end=2.3).to_json() == (
        '{"event": "wake", "t": 2.8, "label": "HEY", "keyword": "HEY", "t_end": 2.3}'
    )
    assert Final(t=1.0, text="广州", reason="endpoint").to_json() == (
        '{"event": "final", "t": 1.0, "text": "广州", "reason": "endpoint"}'
    )
    assert StateChange(t=0.5, state="idle", previous="thinking").to_json().startswith('{"event": "state"')
    assert np.isfinite(Reply(t=3.0, text="hi", latency_ms=12.5).t)
