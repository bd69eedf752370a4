"""Timers and alarms: the state file round trip, and timers set from a spoken transcript in the running daemon
(real KWS-as-ASR, real espeak-ng speech) firing at the right audio time, surviving a restart, and being
announced once as missed when they ended while the assistant was stopped."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import pipeline
from assistant.audio.ring import AudioRing
from assistant.audio.sources import open_source
from assistant.daemon import Daemon, make_executor
from assistant.events import Event, Reply, TimerFinished, TimerStarted
from assistant.intents.chime import CHIME_RATE, chime
from assistant.intents.engine import IntentEngine
from assistant.intents.timers import STATE_FILE, TimerBook
from assistant.settings import Settings, load_settings
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip as load_mono16k
from speechdata.audio import silence, write_wav
from tests.conftest import require
from tests.support.speech import JFK_HEAD_S, espeak

START = 1_800_000_000.0  # the timers' clock at audio t = 0 (epoch seconds)
TIMEOUT_S = 120
# espeak-ng phrasing and voice the English KWS model (as ASR) hears as an intent: it hears "IN TEN SECOND
# CHECK ..." (HassStartTimer's "(in|after) {seconds} second[s] {command}"); "set a timer for ten seconds" comes
# out as "SENT TIMER FAR TEN SECOND" or "TIME OR ..." in every voice tried, which no template matches.
TIMER_PHRASE = "in ten seconds check the oven"


# -- the book and its file --------------------------------------------------------------------------------


def test_state_file_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "state" / STATE_FILE
    book = TimerBook(path)
    pasta = book.add("timer", "pasta", "en", 300, START + 300)
    alarm = book.add("alarm", "早上7点", "zh", 0, START + 3600)
    book.pause(pasta.id, START + 100)
    assert sorted(p.name for p in path.parent.iterdir()) == [STATE_FILE]  # no temporary file left behind
    restored = TimerBook(path)
    assert restored.restore(START + 200) == []
    assert restored.all() == book.all()
    assert restored.get(pasta.id).paused_left == 200 and restored.get(alarm.id).label == "早上7点"
    # ids go on where they stopped, so an old id never comes back for a new timer
    assert restored.add("timer", "tea", "en", 60, START + 260).id == "timer-3"


def test_a_timer_that_ended_while_stopped_is_missed_once(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    book = TimerBook(path)
    ended = book.add("timer", "tea", "en", 60, START + 60)
    running = book.add("timer", "bread", "en", 3600, START + 3600)
    paused = book.add("timer", "eggs", "en", 120, START + 120)
    book.pause(paused.id, START + 10)
    again = TimerBook(path)
    assert [t.id for t in again.restore(START + 600)] == [ended.id]
    assert {t.id for t in again.all()} == {running.id, paused.id}  # a paused timer never ends by itself
    assert TimerBook(path).restore(START + 600) == []  # announced once: gone from the file


def test_unreadable_state_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    path.write_text("{not json", encoding="utf-8")
    book = TimerBook(path)
    assert book.restore(START) == [] and book.all() == []
    assert (tmp_path / "timers.unreadable").read_text(encoding="utf-8") == "{not json"


# -- in the daemon, from speech ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path) -> dict[str, Any]:  # noqa: F811
    keywords_file = tmp_path_factory.mktemp("kw") / "keywords.txt"
    keywords_file.write_text("FELLOW AMERICANS\n", encoding="utf-8")
    settings = load_settings(None, {
        "wake.keywords_file": keywords_file, "wake.model_dir": require(KWS_EN), "asr.model_dir": KWS_EN,
        "llm.model_dir": tiny_llm, "llm.max_new_tokens": 8, "llm.threads": 1,
    })
    keywords = pipeline.load_keyword_list(settings)
    return {"settings": settings, "wake": pipeline.build_wake(settings, keywords), "asr": pipeline.build_asr(settings),
            "chat": pipeline.build_chat(settings), "intents": IntentEngine(("en", "zh"))}


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The wake phrase from the JFK clip, then the timer question in espeak-ng's voice."""
    folder = tmp_path_factory.mktemp("speech")
    head = load_mono16k(AUDIO / "en" / "whisper-jfk.flac")[: int(JFK_HEAD_S * 16000)]
    return np.concatenate([head, espeak(folder / "q.wav", TIMER_PHRASE)])


def run_daemon(models: dict[str, Any], audio: Path, state: Path, start: float,
               settings: Settings | None = None, speech: Any = None) -> list[Event]:
    events: list[Event] = []
    executor = make_executor()
    models["wake"].reset()
    settings = settings or models["settings"]
    daemon = Daemon(settings, wake=models["wake"], asr=models["asr"], chat=models["chat"],
                    ring=AudioRing(settings.audio.ring_s), emit=events.append, executor=executor,
                    intents=models["intents"], timers=TimerBook(state / STATE_FILE), start_time=start,
                    speech=speech)

    async def main() -> None:
        await asyncio.wait_for(daemon.run(open_source(str(audio))), TIMEOUT_S)

    try:
        asyncio.run(main())
    finally:
        executor.shutdown(wait=True)
    return events


def _one(events: list[Event], kind: type) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, [e.to_json() for e in events if e.name != "partial"]
    return found[0]


def test_spoken_timer_fires_at_the_right_audio_time(models: dict[str, Any], question: np.ndarray,
                                                    tmp_path: Path) -> None:
    audio = write_wav(tmp_path / "timer.wav", question, silence(13.0))
    out = tmp_path / "spoken.wav"
    settings = load_settings(None, {**_keys(models["settings"]), "tts.engine": "espeak", "tts.output": out})
    speech = pipeline.build_speech(settings)
    try:
        events = run_daemon(models, audio, tmp_path / "state", START, settings, speech)
        alone = [speech.synthesizer.synthesize(e.text) for e in events if isinstance(e, Reply)]
    finally:
        speech.close()
    reply = _one(events, Reply)
    assert reply.intent == "HassStartTimer" and reply.text.startswith("In 10 seconds"), reply
    started, finished = _one(events, TimerStarted), _one(events, TimerFinished)
    assert started.t == reply.t and finished.id == started.id and not finished.missed
    # It ends 10 s of audio after it was set, at the first 100 ms chunk that reaches that time.
    assert reply.t + 10.0 <= finished.t <= reply.t + 10.0 + 0.1 + 1e-6, (reply.t, finished.t)
    assert finished.text == "Your 10 second timer is done."
    assert json.loads((tmp_path / "state" / STATE_FILE).read_text(encoding="utf-8"))["timers"] == []
    # Spoken: the reply, then the chime and the announcement, into the WAV sink.
    reply_s = sum(len(samples) / rate for samples, rate in alone)
    with wave.open(str(out)) as wav:
        spoken_s = wav.getnframes() / wav.getframerate()
    assert spoken_s > reply_s + len(chime()) / CHIME_RATE + 0.5, (spoken_s, reply_s)


def _keys(settings: Settings) -> dict[str, Any]:
    return {"wake.keywords_file": settings.wake.keywords_file, "wake.model_dir": settings.wake.model_dir,
            "asr.model_dir": settings.asr.model_dir, "llm.model_dir": settings.llm.model_dir,
            "llm.max_new_tokens": 8, "llm.threads": 1}


def test_timer_survives_a_restart_and_is_missed_once(models: dict[str, Any], question: np.ndarray,
                                                     tmp_path: Path) -> None:
    state = tmp_path / "state"
    # First run: the recording ends 2 s after the question, before the timer does.
    first = run_daemon(models, write_wav(tmp_path / "short.wav", question, silence(2.0)), state, START)
    started = _one(first, TimerStarted)
    assert not [e for e in first if isinstance(e, TimerFinished)]
    (saved,) = json.loads((state / STATE_FILE).read_text(encoding="utf-8"))["timers"]
    assert saved["id"] == started.id
    due = saved["due"]
    quiet = write_wav(tmp_path / "quiet.wav", silence(6.0))
    # Restarted 3 s before it ends: restored, and it fires 3 s into the new input.
    second = run_daemon(models, quiet, state, due - 3.0)
    finished = _one(second, TimerFinished)
    assert finished.id == started.id and not finished.missed and 3.0 <= finished.t <= 3.1 + 1e-6
    # Set again, then the assistant is down while it ends: announced once, as missed, at the start.
    run_daemon(models, write_wav(tmp_path / "short2.wav", question, silence(2.0)), state, START)
    (saved,) = json.loads((state / STATE_FILE).read_text(encoding="utf-8"))["timers"]
    third = run_daemon(models, quiet, state, saved["due"] + 60)
    missed = _one(third, TimerFinished)
    assert missed.missed and missed.t == 0.0 and missed.text.startswith("While I was off, your 10 second timer")
    fourth = run_daemon(models, quiet, state, saved["due"] + 120)
    assert not [e for e in fourth if isinstance(e, TimerFinished)]


def test_a_reload_swaps_the_intents_and_keeps_the_timers(models: dict[str, Any], tmp_path: Path) -> None:
    from assistant.daemon import Reloaded

    book = TimerBook(tmp_path / STATE_FILE)
    timer = book.add("timer", "tea", "en", 60, START + 60)
    daemon = Daemon(models["settings"], wake=models["wake"], asr=models["asr"], chat=models["chat"],
                    ring=AudioRing(10), emit=lambda e: None, executor=None, intents=models["intents"],
                    timers=book, start_time=START)
    fresh = IntentEngine(("en",))
    daemon.request_reload(Reloaded(settings=models["settings"], wake=models["wake"], asr=models["asr"],
                                   intents=fresh))
    daemon._apply_reload()  # what the daemon does between two chunks while idle
    assert daemon.intents is fresh and daemon.timers is book and book.all() == [timer]


def test_live_timer_fires_from_the_event_loop_while_no_audio_arrives(models: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    """Live source, wall clock: the timer is a loop.call_at, so it ends on time even when no chunk comes."""
    import time

    from assistant.audio.chunk import AudioChunk

    book = TimerBook(tmp_path / STATE_FILE)
    timer = book.add("timer", "tea", "en", 0.3, time.time() + 0.3)
    fired = asyncio.Event()
    events: list[Event] = []

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, TimerFinished):
            fired.set()

    async def stalled_microphone():  # one chunk, then nothing until the timer has been announced
        yield AudioChunk(np.zeros(1600, dtype=np.float32), 0.0)
        await asyncio.wait_for(fired.wait(), 30)

    executor = make_executor()
    daemon = Daemon(models["settings"], wake=models["wake"], asr=models["asr"], chat=models["chat"],
                    ring=AudioRing(10), emit=emit, executor=executor, intents=models["intents"], timers=book,
                    live=True)
    try:
        asyncio.run(asyncio.wait_for(daemon.run(stalled_microphone()), TIMEOUT_S))
    finally:
        executor.shutdown(wait=True)
    finished = _one(events, TimerFinished)
    assert finished.id == timer.id and finished.t == 0.1  # no audio after the first chunk: it came from call_at
    assert book.all() == []


def test_announcement_waits_for_the_reply_in_progress(models: dict[str, Any], tmp_path: Path) -> None:
    """A timer that ends while a reply is being spoken is announced after it: chime and label come second."""
    out = tmp_path / "spoken.wav"
    settings = load_settings(None, {**_keys(models["settings"]), "tts.engine": "espeak", "tts.output": out})
    speech = pipeline.build_speech(settings)
    book = TimerBook(tmp_path / STATE_FILE)
    executor = make_executor()
    daemon = Daemon(settings, wake=models["wake"], asr=models["asr"], chat=models["chat"], ring=AudioRing(10),
                    emit=lambda e: None, executor=executor, intents=models["intents"], timers=book,
                    speech=speech, start_time=START)
    reply_text = "This reply was already being spoken."

    async def main() -> None:
        daemon._timers_start()  # what run() does first: restore, and the announcer task
        go = asyncio.Event()

        async def reply_in_progress() -> None:
            await go.wait()
            await asyncio.get_running_loop().run_in_executor(executor, speech.speak, reply_text)

        daemon._reply_task = asyncio.create_task(reply_in_progress())
        book.add("timer", "tea", "en", 60, START - 1)
        daemon._timers_check()  # the timer ends now, while the reply task runs: queued
        go.set()
        await daemon._reply_task
        await asyncio.wait_for(daemon._timers_drain(), TIMEOUT_S)
        daemon._timers_stop()

    try:
        asyncio.run(main())
        reply_samples, reply_rate = speech.synthesizer.synthesize(reply_text)
    finally:
        executor.shutdown(wait=True)
        speech.close()
    import soundfile as sf

    spoken, rate = sf.read(str(out), dtype="float32")
    assert rate == reply_rate
    reply_end = len(reply_samples)
    np.testing.assert_allclose(spoken[:reply_end], reply_samples, atol=1e-3)  # the reply, whole, first
    # then the chime (resampled into the file's rate) right after it
    tone = spoken[reply_end: reply_end + int(0.15 * rate)]
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spectrum) * rate / len(tone) - 880.0) < 20.0
