"""Barge-in on a live source: a stop phrase or a wake word said over the assistant's own voice.

The daemon runs in process on a real-time paced source (speechdata/echo_room.py; the harness is
tests/support/bargein.py): real clips planted by the test, plus the echo of what the assistant says (espeak-ng,
written by the paced WAV sink) through a simulated room (50 ms, -26 dB, synthetic reverberant tail; the phrases
+20 dB (stop) and +30 dB (wake) above the echo).
The reply comes from the tiny int8 MiniMind export (gibberish, but real decoding); the wake word is FELLOW
AMERICANS from the JFK clip, the stop phrase in these tests is SORROW, said in a real LibriSpeech clip
("IT WAS THE FIRST GREAT SORROW OF HIS LIFE ..."), planted once the assistant is heard speaking, as a user
would.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import pipeline
from assistant.daemon import Daemon
from assistant.events import Event, Interrupted, StateChange
from assistant.llm.chat import Conversation
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer
from speechdata.echo_room import LiveSource
from tests.support.bargein import WAKE_SER_DB, check_stopped, make_parts, names, run_live, ser_gain

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (the assistant's voice)")


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path) -> dict[str, Any]:
    return make_parts(tmp_path_factory.mktemp("kw"), tiny_llm)


class ScriptedChat(Conversation):
    """The real model's reply after a fixed opening: makes the assistant say the wake and stop phrases."""

    opening = "My fellow Americans, this is a great sorrow. "

    def stream(self, user_text: str, sampling: Sampling, cancel: threading.Event | None = None) -> Iterator[str]:
        yield self.opening
        yield from super().stream(user_text, sampling, cancel)


def test_stop_phrase_over_the_echo_returns_to_idle(parts, tmp_path):
    planted: list[float] = []

    def on_event(event: Event, source: LiveSource, daemon: Daemon) -> None:
        if isinstance(event, StateChange) and event.state == "speaking" and not planted:
            clip = parts["sorrow"]
            planted.append(source.plant(clip, source.t + 0.5, ser_gain(parts, clip))[0])
        if isinstance(event, Interrupted):
            source.end = source.t + 2.0

    events, daemon, source, output = run_live(parts, tmp_path, on_event)
    check_stopped(events, daemon, output, planted)


def test_wake_word_over_the_echo_starts_a_new_turn(parts, tmp_path):
    planted: list[float] = []

    def on_event(event: Event, source: LiveSource, daemon: Daemon) -> None:
        if isinstance(event, StateChange) and event.state == "speaking" and not planted:
            head, question = parts["wake_head"], parts["question"]
            at = source.plant(head, source.t + 0.5, ser_gain(parts, head, WAKE_SER_DB))[1]
            planted.append(at)
            source.plant(question, at, ser_gain(parts, question, WAKE_SER_DB))
        if isinstance(event, StateChange) and event.state == "thinking" and planted:
            source.end = source.t + 1.0

    events, daemon, source, output = run_live(parts, tmp_path, on_event)
    seq = names(events)
    assert planted, f"the assistant never spoke: {seq}"
    (cut,) = [e for e in events if isinstance(e, Interrupted)]
    assert cut.by == "wake" and cut.label == "FELLOW AMERICANS" and cut.state == "speaking"
    i = seq.index("interrupted")
    assert seq[i + 1 : i + 5] == ["state:idle", "wake", "state:listening", "final"], seq
    finals = [e for e in events if e.name == "final"]
    assert len(finals) == 2 and "APOSTLE" in finals[1].text.upper()
    assert "error" not in seq


def test_own_voice_saying_the_phrases_does_not_interrupt(parts, tmp_path):
    """The assistant itself says "my fellow Americans" and "sorrow": its echo must not wake or stop it."""
    settings = parts["settings"]
    chat = ScriptedChat(pipeline.build_chat(settings).model, Tokenizer.from_dir(parts["tiny_llm"]))

    def on_event(event: Event, source: LiveSource, daemon: Daemon) -> None:
        if event.name == "reply":
            source.end = source.t + 1.5

    events, daemon, source, output = run_live(parts, tmp_path, on_event, chat=chat)
    seq = names(events)
    assert "state:speaking" in seq and "reply" in seq, seq
    assert "interrupted" not in seq and seq.count("wake") == 1, seq
    assert np.isfinite(output.last_write_t or 0.0)


# The echo canceller, live in the daemon: tests/test_bargein_aec.py.
