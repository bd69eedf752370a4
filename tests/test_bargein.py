"""Barge-in on a live source: a stop phrase or a wake word said over the assistant's own voice.

The daemon runs in process on a real-time paced source (tests/echo_room.py): real clips planted by the test,
plus the echo of what the assistant says (espeak-ng, written by the paced WAV sink) through a simulated room
(50 ms, -26 dB, synthetic reverberant tail; the phrases +20 dB (stop) and +30 dB (wake) above the echo).
The reply comes from the tiny int8 MiniMind export (gibberish, but real decoding); the wake word is FELLOW
AMERICANS from the JFK clip, the stop phrase in these tests is SORROW, said in a real LibriSpeech clip
("IT WAS THE FIRST GREAT SORROW OF HIS LIFE ..."), planted once the assistant is heard speaking, as a user
would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import pipeline
from assistant.audio.ring import AudioRing
from assistant.daemon import Daemon, State, make_executor
from assistant.events import Event, Interrupted, StateChange
from assistant.llm.chat import Conversation
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer
from assistant.reply.sinks import Speech
from assistant.reply.tts import EspeakTts
from assistant.settings import TtsSettings, load_settings
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip as load_mono16k
from speechdata.echo_room import EchoLoop, LiveSource, LoopbackOutput, Room, rms
from tests.conftest import require

JFK = AUDIO / "en" / "whisper-jfk.flac"
SORROW = AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav"
QUESTION = AUDIO / "en" / "picovoice-leopard-test.wav"
TIMEOUT_S = 180
ROOM = Room(delay_s=0.05, gain_db=-26.0)  # loudspeaker across the room; louder phrases would clip
# Speech-to-echo ratio of the planted phrases. Without an echo canceller the spotter hears a phrase through
# the echo only well above it (bench/bargein.py: recall by ratio; offline on espeak echo, SORROW: 3/3 at +20 dB,
# 2/3 at +10, 0/3 at +5; FELLOW AMERICANS: 3/3 at +30, 2/3 at +20): the user close to the microphone, the
# assistant's loudspeaker across the room.
SER_DB = 20.0
WAKE_SER_DB = 30.0
VOICE_SAMPLE = "This is how the assistant sounds when it answers a question about the weather."

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (the assistant's voice)")


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path) -> dict[str, Any]:  # noqa: F811
    kw = tmp_path_factory.mktemp("kw") / "keywords.txt"
    kw.write_text("FELLOW AMERICANS\n", encoding="utf-8")
    settings = load_settings(None, {
        "wake.keywords_file": kw,
        "wake.model_dir": require(KWS_EN),
        "wake.stop_phrases": ["SORROW @stop"],
        "asr.model_dir": KWS_EN,
        "llm.model_dir": tiny_llm,
        "llm.max_new_tokens": 40,
        "llm.threads": 1,
    })
    keywords = pipeline.load_keyword_list(settings)
    return {
        "settings": settings,
        "wake": pipeline.build_wake(settings, keywords),
        "asr": pipeline.build_asr(settings),
        "tiny_llm": tiny_llm,
        "wake_head": load_mono16k(JFK)[: int(3.0 * 16000)],  # "And so, my fellow Americans,"
        "question": load_mono16k(QUESTION),
        "sorrow": load_mono16k(SORROW)[: int(3.5 * 16000)],  # "IT WAS THE FIRST GREAT SORROW ..."
        # RMS of the assistant's voice, for planting phrases at a speech-to-echo ratio.
        "voice_rms": rms(EspeakTts(TtsSettings(engine="espeak")).synthesize(VOICE_SAMPLE)[0]),
    }


def ser_gain(parts: dict[str, Any], clip: np.ndarray, ser_db: float = SER_DB, room: Room | None = None) -> float:
    """Gain that puts `clip`'s speech at `ser_db` above the echo of the assistant's voice at the microphone."""
    echo_rms = parts["voice_rms"] * (room or ROOM).energy_gain()
    voiced = clip[np.abs(clip) > 0.01]
    return echo_rms * 10 ** (ser_db / 20) / rms(voiced if len(voiced) else clip)


class ScriptedChat(Conversation):
    """The real model's reply after a fixed opening: makes the assistant say the wake and stop phrases."""

    opening = "My fellow Americans, this is a great sorrow. "

    def stream(self, user_text: str, sampling: Sampling, cancel: threading.Event | None = None) -> Iterator[str]:
        yield self.opening
        yield from super().stream(user_text, sampling, cancel)


def run_live(parts: dict[str, Any], tmp: Path, on_event, *, chat: Conversation | None = None,
             seconds: float = 60.0, room: Room = ROOM,
             aec: bool = False) -> tuple[list[Event], Daemon, LiveSource, LoopbackOutput]:
    settings = parts["settings"]
    settings = dataclasses.replace(settings, tts=dataclasses.replace(settings.tts, echo_cancel=aec))
    loop = EchoLoop(room)
    source = LiveSource(loop, seconds, echo=not os.environ.get("NOECHO"))
    output = LoopbackOutput(tmp / "spoken.wav", loop)
    speech = Speech(EspeakTts(TtsSettings(engine="espeak")), output)
    chat = chat or Conversation(pipeline.build_chat(settings).model, Tokenizer.from_dir(parts["tiny_llm"]))
    at = source.plant(parts["wake_head"], 0.5)[1]
    source.plant(parts["question"], at)
    events: list[Event] = []
    executor = make_executor()
    parts["wake"].reset()

    def emit(event: Event) -> None:
        events.append(event)
        on_event(event, source, daemon)

    daemon = Daemon(settings, wake=parts["wake"], asr=parts["asr"], chat=chat, ring=AudioRing(settings.audio.ring_s),
                    emit=emit, executor=executor, speech=speech, live=True)

    async def main() -> None:
        await asyncio.wait_for(daemon.run(source), TIMEOUT_S)

    try:
        asyncio.run(main())
    finally:
        executor.shutdown(wait=True)
        speech.close()
    return events, daemon, source, output


def names(events: list[Event]) -> list[str]:
    return [e.name if not isinstance(e, StateChange) else f"state:{e.state}" for e in events if e.name != "partial"]


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


def check_stopped(events, daemon, output, planted) -> None:
    seq = names(events)
    assert planted, f"the assistant never spoke: {seq}"
    (cut,) = [e for e in events if isinstance(e, Interrupted)]
    assert cut.by == "stop" and cut.label == "stop" and cut.state == "speaking"
    assert cut.t > planted[0]
    assert cut.question and "APOSTLE" in cut.question.upper()
    # Stop: back to idle, no reply for the cut-off turn, nothing of it in the history, no new turn.
    after = seq[seq.index("interrupted"):]
    assert after[:2] == ["interrupted", "state:idle"], seq
    assert "reply" not in seq and "error" not in seq
    assert seq.count("wake") == 1
    assert daemon.state is State.IDLE and daemon.chat.history == []
    # The speech stopped: nothing was written long after the stop phrase was heard.
    assert output.last_write_t is not None and output.last_write_t < cut.t + 1.5


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
