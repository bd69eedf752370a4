"""The live barge-in harness shared by tests/test_bargein*.py and tests/test_barge_in_spotter.py: the daemon in
process on a real-time paced source (speechdata/echo_room.py) with real clips planted and the assistant's own
espeak-ng voice fed back through a simulated room."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from assistant import pipeline
from assistant.audio.ring import AudioRing
from assistant.daemon import Daemon, State, make_executor
from assistant.events import Event, Interrupted, StateChange
from assistant.llm.chat import Conversation
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
# assistant's loudspeaker across the room. Stop phrases too are planted at +30 dB: without a canceller the
# daemon holds them to wake.speaking_threshold (0.65) while it speaks, and at +20 dB a live run could miss
# one (bench/stop_threshold.py measures recall there); these tests are about what a heard phrase does.
SER_DB = 30.0
WAKE_SER_DB = 30.0
VOICE_SAMPLE = "This is how the assistant sounds when it answers a question about the weather."



def make_parts(tmp: Path, tiny_llm: Path, **overrides: Any) -> dict[str, Any]:
    """Settings, wake word, recognizer and clips for a live run; `overrides` are extra settings keys."""
    kw = tmp / "keywords.txt"
    kw.write_text("FELLOW AMERICANS\n", encoding="utf-8")
    settings = load_settings(None, {
        "wake.keywords_file": kw,
        "wake.model_dir": require(KWS_EN),
        "wake.stop_phrases": ["SORROW @stop"],
        "asr.model_dir": KWS_EN,
        "llm.model_dir": tiny_llm,
        "llm.max_new_tokens": 40,
        "llm.threads": 1,
        **overrides,
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


def check_stopped(events, daemon, output, planted) -> None:
    seq = names(events)
    assert planted, f"the assistant never spoke: {seq}"
    cuts = [e for e in events if isinstance(e, Interrupted)]
    assert len(cuts) == 1, f"{len(cuts)} interruptions for one stop phrase planted at {planted[0]:.2f} s: {cuts} {seq}"
    (cut,) = cuts
    assert cut.by == "stop" and cut.label == "stop" and cut.state == "speaking", cut
    assert cut.t > planted[0], (cut, planted)
    assert cut.question and "APOSTLE" in cut.question.upper(), cut
    # Stop: back to idle, no reply for the cut-off turn, nothing of it in the history, no new turn.
    after = seq[seq.index("interrupted"):]
    assert after[:2] == ["interrupted", "state:idle"], seq
    assert "reply" not in seq and "error" not in seq
    assert seq.count("wake") == 1
    assert daemon.state is State.IDLE and daemon.chat.history == []
    # The speech stopped: nothing was written long after the stop phrase was heard.
    assert output.last_write_t is not None and output.last_write_t < cut.t + 1.5


def english_wake_with_stops() -> Any:
    """The English spotter of the barge-in tests: FELLOW AMERICANS, the default stop phrases and SORROW (a stop
    phrase that a real shared clip says)."""
    from assistant.models.files import find_transducer
    from assistant.wake.keywords import load_tokens, parse_keywords, stop_phrase_keywords
    from assistant.wake.spotter import WakeWord

    files = find_transducer(require(KWS_EN), "kws")
    table = load_tokens(files.tokens, files.bpe_model)
    return WakeWord(files, parse_keywords("FELLOW AMERICANS", table),
                    stop_keywords=stop_phrase_keywords(None, table) + parse_keywords("SORROW @sorrow", table))
