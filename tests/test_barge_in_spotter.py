"""The barge-in spotter (wake/spotter.py BargeInSpotter): wake.barge_in_* build it, it hears the same phrases as
the wake word on real clips, reports each once, never on speech without them, and the daemon uses it so that
a stop phrase said over the assistant's own echo still stops the reply and returns to IDLE."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant import pipeline
from assistant.audio.chunk import AudioChunk
from assistant.errors import ConfigError
from assistant.events import Event, Interrupted, StateChange
from assistant.settings import load_settings
from assistant.wake.spotter import BargeInSpotter, WakeWord, barge_in_spotter
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip
from tests.conftest import require
from tests.support.bargein import english_wake_with_stops

RATE = 16000
SORROW = AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav"  # "IT WAS THE FIRST GREAT SORROW OF HIS LIFE ..."
JFK = AUDIO / "en" / "whisper-jfk.flac"  # "And so, my fellow Americans, ask not ..."
OTHERS = [AUDIO / "en" / "picovoice-leopard-test.wav", AUDIO / "en" / "lhotse-librispeech-2412-153948-0000.flac"]


@pytest.fixture(scope="module")
def wake() -> WakeWord:
    return english_wake_with_stops()


def feed(spotter: Any, audio: np.ndarray, lead_s: float = 0.0) -> list:
    audio = np.concatenate([np.zeros(int(lead_s * RATE), np.float32), audio, np.zeros(RATE, np.float32)])
    spotter.reset(0.0)
    hits = []
    for i in range(0, len(audio), 1600):
        hit = spotter.accept(AudioChunk(audio[i : i + 1600], i / RATE))
        if hit is not None:
            hits.append(hit)
    return hits


def test_settings_build_it_and_zero_streams_keep_the_old_path(tmp_path, keywords_file):
    base = {"wake.keywords_file": keywords_file, "wake.model_dir": require(KWS_EN)}
    settings = load_settings(None, {**base, "wake.barge_in_streams": 3, "wake.barge_in_trailing_blanks": 0})
    built = pipeline.build_wake(settings, pipeline.load_keyword_list(settings))
    barge_in = built.barge_in
    assert isinstance(barge_in, BargeInSpotter) and len(barge_in.streams) == 3
    assert barge_in.wake.trailing_blanks == 0 and built.wake.trailing_blanks == 1  # its own model instance
    assert barge_in.labels == built.labels and barge_in.stop_labels == built.stop_labels
    settings = load_settings(None, {**base, "wake.barge_in_streams": 0})
    assert pipeline.build_wake(settings, pipeline.load_keyword_list(settings)).barge_in is None
    defaults = load_settings(None, base).wake
    assert (defaults.barge_in_streams, defaults.barge_in_trailing_blanks) == (4, 0)
    path = tmp_path / "config.yaml"
    path.write_text("wake:\n  barge_in_streams: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wake\.barge_in_streams"):
        load_settings(path)


def test_equal_trailing_blanks_share_the_loaded_model(wake):
    shared = barge_in_spotter(wake, streams=2, trailing_blanks=None)
    assert shared.wake is wake and all(s._spotter is wake._spotter for s in shared.streams)


@pytest.mark.parametrize("lead_s", [0.0, 0.12, 0.25])
def test_it_hears_what_the_wake_word_hears_once_and_no_later(wake, lead_s):
    """On the real clips, at three offsets against the encoder's chunk grid: the same stop phrase and wake word,
    each reported once (a slower stream does not report it again), never later in the input than the wake
    word's own stream reports it."""
    fast = barge_in_spotter(wake, streams=2, trailing_blanks=0)
    for path, label, kind in ((SORROW, "sorrow", "stop"), (JFK, "FELLOW AMERICANS", "wake")):
        audio = load_clip(path)[: int(3.5 * RATE)]
        slow = [(h.label, h.kind) for h in feed(wake, audio, lead_s)]
        hits = feed(fast, audio, lead_s)
        assert [(h.label, h.kind) for h in hits] == [(label, kind)] == slow
        assert hits[0].t <= feed(wake, audio, lead_s)[0].t
        assert hits[0].timed and hits[0].t_end < hits[0].t


def test_no_detection_on_speech_without_the_phrases(wake):
    fast = barge_in_spotter(wake, streams=2, trailing_blanks=0)
    for path in OTHERS:
        assert feed(fast, load_clip(path)) == [], path.name


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (the assistant's voice)")
def test_stop_over_the_echo_with_three_streams_returns_to_idle(tmp_path, tiny_llm):
    """tests/test_bargein.py runs the defaults (4 streams); here 3, through the daemon: stop -> IDLE, no self-wake."""
    from tests.support import bargein as live

    parts = live.make_parts(tmp_path, tiny_llm, **{"wake.barge_in_streams": 3})
    assert len(parts["wake"].barge_in.streams) == 3
    planted: list[float] = []

    def on_event(event: Event, source: Any, daemon: Any) -> None:
        if isinstance(event, StateChange) and event.state == "speaking" and not planted:
            clip = parts["sorrow"]
            planted.append(source.plant(clip, source.t + 0.5, live.ser_gain(parts, clip))[0])
        if isinstance(event, Interrupted):
            source.end = source.t + 2.0

    events, daemon, _, output = live.run_live(parts, Path(tmp_path), on_event)
    live.check_stopped(events, daemon, output, planted)
