"""Real keyword timing: Detection.t_end from sherpa-onnx's per-token times, mapped to input time.

JFK says "And so, my fellow Americans," and the last token of AMERICANS is stamped ~2.40 s of the clip (a
fresh stream), while the sound ends at ~2.15 s (the energy drops; tests/test_asr.py cuts the clip there).
The checks: a first detection, a detection after our own reset_stream (COUNTRY, twice in the clip), one
after sherpa-onnx reset the decoder by itself (the clip again after 2 s of silence), through the gate's
replayed pre-roll, and with the clip starting later in the input.
"""

from __future__ import annotations

import numpy as np
import pytest

from assistant.audio.chunk import AudioChunk
from assistant.models.files import find_transducer
from assistant.settings import GateSettings
from assistant.wake.gate import gated
from assistant.wake.keywords import load_tokens, parse_keywords
from assistant.wake.spotter import WakeWord
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip as load_mono16k
from tests.conftest import require

AMERICANS_END_S = 2.15  # in the JFK clip
TOLERANCE_S = 0.2


@pytest.fixture(scope="module")
def spotter() -> WakeWord:
    files = find_transducer(require(KWS_EN), "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    return WakeWord(files, parse_keywords("FELLOW AMERICANS\nCOUNTRY", table))


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_mono16k(AUDIO / "en" / "whisper-jfk.flac")


def detections(wake, audio: np.ndarray, t0: float = 0.0) -> list:
    wake.reset()
    found = []
    for i in range(0, len(audio), 1600):
        hit = wake.accept(AudioChunk(audio[i : i + 1600], t0 + i / 16000))
        if hit is not None:
            found.append(hit)
    return found


def test_chunk_is_measured(spotter):
    assert spotter.chunk_s == pytest.approx(0.32, abs=0.01)


def test_first_keyword_end_is_the_token_time(spotter, jfk):
    first = detections(spotter, jfk)[0]
    assert first.label == "FELLOW AMERICANS" and first.timed
    assert abs(first.t_end - AMERICANS_END_S) < TOLERANCE_S
    assert first.t_end < first.t  # reported later than it ended


def test_after_our_reset_and_after_sherpas_own(spotter, jfk):
    gap = 2.0
    audio = np.concatenate([jfk, np.zeros(int(gap * 16000), np.float32), jfk])
    found = detections(spotter, audio)
    assert all(d.timed for d in found)
    fellow = [d for d in found if d.label == "FELLOW AMERICANS"]
    assert len(fellow) == 2
    assert abs(fellow[0].t_end - AMERICANS_END_S) < TOLERANCE_S
    # The second one comes after COUNTRY resets (ours) and 2 s of silence (sherpa-onnx's own reset).
    assert abs(fellow[1].t_end - (len(jfk) / 16000 + gap + AMERICANS_END_S)) < TOLERANCE_S
    # COUNTRY ends before it is reported and after the previous keyword.
    ends = [d.t_end for d in found]
    assert ends == sorted(ends)
    assert all(d.t_end <= d.t for d in found)


def test_input_time_offset_and_gate_pre_roll(spotter, jfk):
    audio = np.concatenate([np.zeros(16000 * 3, np.float32), jfk])
    ungated = detections(spotter, audio, t0=10.0)[0]
    assert abs(ungated.t_end - (13.0 + AMERICANS_END_S)) < TOLERANCE_S
    gate = gated(spotter, GateSettings())
    through_gate = detections(gate, audio, t0=10.0)[0]
    assert through_gate.timed
    assert abs(through_gate.t_end - ungated.t_end) < 0.05
