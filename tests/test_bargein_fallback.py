"""Barge-in with no echo canceller (the fallback, docs/echo-cancellation.md): while a reply is live and no
canceller runs, the stop phrases need wake.speaking_threshold to fire, so the assistant's own voice (espeak-ng
through the simulated room) does not stop it, while a stop said to it still does; with a canceller, or nothing
spoken, the thresholds are the configured ones. Real KWS model, real espeak-ng speech and real clips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assistant import cli, pipeline
from assistant.audio.aec import available as aec_available
from assistant.audio.chunk import AudioChunk
from assistant.daemon import Reloaded
from assistant.errors import CONFIG, ConfigError
from assistant.reply.sinks import Speech
from assistant.reply.tts import EspeakTts, WavFileOutput
from assistant.settings import TtsSettings, load_settings
from assistant.wake.spotter import SPEAKING_THRESHOLD, BargeInSpotter, WakeWord, barge_in_spotter
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip
from speechdata.echo_room import Room
from tests.conftest import build_daemon, needs_tool, require
from tests.support.bargein import english_wake_with_stops

RATE = 16000
ROOM = Room(delay_s=0.05, gain_db=-6.0)  # bench/bargein.py's room: the loudspeaker close to the microphone
SORROW = AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav"  # "IT WAS THE FIRST GREAT SORROW OF HIS LIFE ..."
JFK = AUDIO / "en" / "whisper-jfk.flac"  # "And so, my fellow Americans, ..."
# The assistant's own answers (OpenBookQA, bench/stop_threshold.py's own speech: replies 0, 38, 51, 57, 95)
# whose echo through ROOM fired the default STOP in that run ("start", "studied", "stockpiling" ...), none of
# them containing it, so the daemon's text check cannot catch them. Each fires STOP alone too, fed from t = 0.
OWN_SPEECH = (
    "A person wants to start saving money so that they can afford a nice vacation at the end of the year. After "
    "looking over their budget and expenses, they decide the best way to save money is to quit eating lunch out.",
    "They studied the soil by using a microscope.",
    "A person has a chance to experience an equinox biannually.",
    "A construction group wants to put a shopping center in town, but the only place available is a small nature "
    "park with a trail. Deer and other wildlife frequent the park, since it is the only place in the city where "
    "trees and fresh water are available for them. The construction group decides to build the shopping center, "
    "which means that the wildlife environment is destroyed.",
    "Squirrels spend their fall stockpiling pecans for the frigid months.",
)


def espeak(text: str) -> np.ndarray:
    needs_tool("espeak-ng", "apt-get install espeak-ng")
    from bench.stop_phrases import espeak as say

    return say(text, "en")


def feed(spotter, audio: np.ndarray) -> list:
    """Offline, deterministic: 100 ms chunks from t = 0, then 1 s of silence."""
    audio = np.concatenate([audio, np.zeros(RATE, np.float32)])
    spotter.reset(0.0)
    hits = []
    for i in range(0, len(audio), 1600):
        if (hit := spotter.accept(AudioChunk(audio[i : i + 1600], i / RATE))) is not None:
            hits.append(hit)
    return hits


@pytest.fixture(scope="module")
def wake() -> WakeWord:
    return english_wake_with_stops()


def _settings(keywords_file: Path, **extra) -> object:
    return load_settings(None, {"wake.keywords_file": keywords_file, "wake.model_dir": require(KWS_EN),
                                "wake.stop_phrases": ["STOP", "STOP TALKING", "NEVER MIND", "BE QUIET #0.8 @quiet"],
                                "intents.enabled": False, **extra})


def test_without_a_canceller_the_stop_phrases_get_the_raised_threshold(keywords_file):
    settings = _settings(keywords_file, **{"tts.engine": "espeak", "tts.echo_cancel": False})
    built = pipeline.build_wake(settings, pipeline.load_keyword_list(settings))
    barge_in = built.barge_in
    assert isinstance(barge_in, BargeInSpotter) and barge_in.speaking_threshold == SPEAKING_THRESHOLD
    raised = barge_in.wake.thresholds("stop")
    # A line's own higher #threshold stays (max of the two); the wake words and the idle spotter are untouched.
    assert raised == {"STOP": SPEAKING_THRESHOLD, "STOP TALKING": SPEAKING_THRESHOLD,
                      "NEVER MIND": SPEAKING_THRESHOLD, "quiet": 0.8}
    assert barge_in.wake.thresholds("wake") == {"FELLOW AMERICANS": 0.25}
    assert built.wake.thresholds("stop") == {"STOP": 0.25, "STOP TALKING": 0.25, "NEVER MIND": 0.25, "quiet": 0.8}
    # Still one extra model (the 0-blank twin the barge-in spotter had anyway), 4 streams.
    assert len(barge_in.streams) == 4 and barge_in.wake.trailing_blanks == 0

    configured = _settings(keywords_file, **{"tts.engine": "espeak", "tts.echo_cancel": False,
                                             "wake.speaking_threshold": 0.6, "wake.barge_in_streams": 0})
    one = pipeline.build_wake(configured, pipeline.load_keyword_list(configured)).barge_in
    assert one.speaking_threshold == 0.6 and one.wake.thresholds("stop")["STOP"] == 0.6
    assert one.wake.thresholds("stop")["quiet"] == 0.8
    assert len(one.streams) == 1 and one.wake.trailing_blanks == 1  # streams 0: like the wake word's own stream


def test_with_a_canceller_or_no_voice_the_thresholds_are_unchanged(keywords_file):
    for extra in ({"tts.engine": "none", "tts.echo_cancel": False}, {"tts.engine": "espeak", "tts.echo_cancel": True}):
        settings = _settings(keywords_file, **extra)
        barge_in = pipeline.build_wake(settings, pipeline.load_keyword_list(settings)).barge_in
        # tts.echo_cancel true without speexdsp runs no canceller: then the fallback is the right one.
        expected = SPEAKING_THRESHOLD if extra["tts.engine"] == "espeak" and not aec_available() else None
        assert barge_in.speaking_threshold == expected
        if expected is None:
            assert barge_in.wake.thresholds("stop") == {"STOP": 0.25, "STOP TALKING": 0.25, "NEVER MIND": 0.25,
                                                        "quiet": 0.8}


def test_own_speech_that_fired_stop_does_not_at_the_raised_threshold(wake):
    default = barge_in_spotter(wake, 4, 0)  # the daemon's barge-in spotter with a canceller (and before)
    raised = barge_in_spotter(wake, 4, 0, SPEAKING_THRESHOLD)
    ir = ROOM.impulse_response()
    for text in OWN_SPEECH:
        voice = espeak(text)
        echo = np.convolve(voice, ir)[: len(voice)].astype(np.float32)
        assert [d.label for d in feed(default, echo)][:1] == ["STOP"], text
        assert feed(raised, echo) == [], text
    # What the user says is still heard at the raised threshold: espeak-ng saying "Stop." alone, the real SORROW
    # (a stop phrase here) and the real wake phrase.
    stop = np.concatenate([np.zeros(RATE // 2, np.float32), espeak("Stop.")])
    assert [d.label for d in feed(raised, stop)] == ["STOP"]
    assert [d.label for d in feed(raised, load_clip(require(SORROW))[: int(3.5 * RATE)])] == ["sorrow"]
    assert [d.kind for d in feed(raised, load_clip(require(JFK))[: int(3.0 * RATE)])] == ["wake"]


def test_the_daemon_runs_the_raised_spotter_only_without_a_canceller(models, tmp_path):
    """The models were built with no voice configured (tts.engine none); a daemon handed a voice checks what it
    really runs with, and keeps that across a SIGHUP reload."""
    needs_tool("espeak-ng", "apt-get install espeak-ng")
    built = models.wake.barge_in
    assert built.speaking_threshold is None
    speech = Speech(EspeakTts(TtsSettings(engine="espeak")), WavFileOutput(tmp_path / "spoken.wav"))
    plain = dataclasses.replace(models.settings, tts=dataclasses.replace(models.settings.tts, echo_cancel=False))
    try:
        with build_daemon(models, settings=plain, live=True, speech=speech) as (daemon, _):
            assert daemon.aec is None and daemon._barge_in.speaking_threshold == SPEAKING_THRESHOLD
            assert daemon._barge_in.wake.thresholds("stop")["STOP"] == SPEAKING_THRESHOLD
            reloaded = Reloaded(settings=plain, wake=pipeline.build_wake(plain, models.keywords), asr=models.asr)
            daemon.request_reload(reloaded)
            daemon._apply_reload()
            assert daemon.wake is reloaded.wake and daemon._barge_in.speaking_threshold == SPEAKING_THRESHOLD
        with build_daemon(models, settings=plain, live=False, speech=speech) as (daemon, _):
            assert daemon._barge_in is built  # a file read as fast as possible: no barge-in, nothing rebuilt
        if aec_available():
            on = dataclasses.replace(plain, tts=dataclasses.replace(plain.tts, echo_cancel=True))
            with build_daemon(models, settings=on, live=True, speech=speech) as (daemon, _):
                assert daemon.aec is not None and daemon._barge_in is built  # thresholds as configured
    finally:
        speech.close()
    # A reload builds for the voice and canceller that run (tts.* needs a restart), not for the new file's.
    running = dataclasses.replace(plain, tts=dataclasses.replace(plain.tts, engine="espeak"))
    reloaded = pipeline.build_reload(running, dataclasses.replace(plain, intents=dataclasses.replace(
        plain.intents, enabled=False)))
    assert reloaded.wake.barge_in.speaking_threshold == SPEAKING_THRESHOLD


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2", "high", "1"])
def test_a_bad_speaking_threshold_is_a_config_error_naming_the_key(tmp_path, capsys, value):
    path = tmp_path / "config.yaml"
    path.write_text(f"wake:\n  speaking_threshold: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wake\.speaking_threshold"):
        load_settings(path)
    # Through the CLI: exit 3 (config) before any model loads (the model folder does not exist).
    code = cli.main(["--config", str(path), "--keywords", str(tmp_path / "kw.txt"), "--model-dir",
                     str(tmp_path / "none")])
    assert code == CONFIG
    err = capsys.readouterr().err
    assert "wake.speaking_threshold" in err and "Traceback" not in err
    assert load_settings(None, {"wake.speaking_threshold": None}).wake.speaking_threshold is None
