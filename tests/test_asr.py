"""Streaming ASR on real speech, fed from the end of the wake word through an AudioRing, as in the daemon."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.asr.streaming import StreamingASR, normalize_text
from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.audio.resample import resample, to_mono
from assistant.audio.ring import AudioRing
from assistant.errors import ModelError
from assistant.models.files import find_transducer
from assistant.wake.keywords import load_tokens, parse_keywords
from assistant.wake.spotter import WakeWord
from speechdata.wer import wer

EN = "kws/en-gigaspeech-3.3M-mobile"
ZH = "kws/zh-wenetspeech-3.3M-mobile"
JFK_AFTER_WAKE = "ask not what your country can do for you ask what you can do for your country"
LEOPARD = "Mr. Quilter is the apostle of the middle classes and we are glad to welcome his gospel"


def load(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    return resample(to_mono(audio), rate)


@pytest.fixture(scope="module")
def en_files(assets):
    return find_transducer(assets / EN, "asr-en")


@pytest.fixture(scope="module")
def en_asr(en_files):
    return StreamingASR(en_files)


def wake_then_transcribe(files, asr: StreamingASR, audio: np.ndarray, keyword: str) -> tuple[list[str], str]:
    """The daemon's flow: spot the wake word, hand the ASR the ring from t_end, then live blocks to endpoint.

    Returns (labels seen, final transcript)."""
    wake = WakeWord(files, parse_keywords(keyword, load_tokens(files.tokens)))
    ring = AudioRing(seconds=5.0)
    labels: list[str] = []
    listening = False
    for i in range(0, len(audio), 1600):
        chunk = AudioChunk(audio[i : i + 1600], i / SAMPLE_RATE)
        ring.push(chunk)
        if not listening:
            hit = wake.accept(chunk)
            if hit is not None:
                labels.append(hit.label)
                asr.start()
                update = asr.accept(ring.since(hit.t_end))
                listening = True
            continue
        update = asr.accept(chunk.samples)
        if update.endpoint:
            break
    return labels, asr.finish() if listening else ""


def test_transcript_after_wake_word_on_jfk(assets, en_files, en_asr):
    labels, text = wake_then_transcribe(en_files, en_asr, load(assets / "audio/en/whisper-jfk.flac"),
                                        "FELLOW AMERICANS")
    assert labels == ["FELLOW AMERICANS"]
    assert wer(JFK_AFTER_WAKE, text) < 0.15, text


def _jfk_then_leopard(assets, gap_trim_s: float) -> np.ndarray:
    jfk = load(assets / "audio/en/whisper-jfk.flac")
    leopard = load(assets / "audio/en/picovoice-leopard-test.wav")
    # "... my fellow Americans" ends at 2.15 s of the JFK clip (energy drops there)
    return np.concatenate([jfk[: int(2.15 * SAMPLE_RATE)], leopard[int(gap_trim_s * SAMPLE_RATE) :]])


def test_words_right_after_the_wake_word_reach_the_transcript(assets, en_files, en_asr):
    labels, text = wake_then_transcribe(en_files, en_asr, _jfk_then_leopard(assets, 0.0), "FELLOW AMERICANS")
    assert labels == ["FELLOW AMERICANS"]
    assert text.split()[0] == "MR", text
    assert wer(LEOPARD, text) <= 0.1, text  # QUILTER comes out as QUILTOR: one substitution


def test_no_pause_after_wake_word(assets, en_files, en_asr):
    # leopard's 0.5 s of leading silence cut away: "Mister" starts the moment "Americans" ends
    labels, text = wake_then_transcribe(en_files, en_asr, _jfk_then_leopard(assets, 0.5), "FELLOW AMERICANS")
    assert labels == ["FELLOW AMERICANS"]
    assert text.split()[0] == "MR", text
    assert wer(LEOPARD, text) <= 0.15, text


def test_chinese_model_as_asr_gives_toned_pinyin(assets):
    files = find_transducer(assets / ZH, "asr-zh")
    asr = StreamingASR(files)
    asr.start()
    asr.accept(load(assets / "audio/zh/wenet-aishell-BAC009S0724W0121.wav"))
    text = asr.finish()
    assert text.startswith("guǎngzhōushì"), text  # 广州市 ...


def test_endpoint_rules(en_asr):
    en_asr.start()
    silence = np.zeros(1600, np.float32)
    updates = [en_asr.accept(silence) for _ in range(30)]  # 3 s of nothing: rule1 (2.4 s) fires
    assert any(u.endpoint for u in updates)
    assert not any(u.endpoint for u in updates[:20])
    assert all(u.text == "" and not u.changed for u in updates)
    assert en_asr.finish() == ""


def test_partials_stream_and_change(assets, en_asr):
    audio = load(assets / "audio/en/picovoice-leopard-test.wav")
    en_asr.start()
    updates = [en_asr.accept(audio[i : i + 1600]) for i in range(0, len(audio), 1600)]
    changed = [u.text for u in updates if u.changed]
    assert len(changed) >= 5 and changed[-1].startswith(changed[0].split()[0])
    final = en_asr.finish()
    assert final.endswith("GOSPEL") and wer(LEOPARD, final) <= 0.1


def test_normalize_text():
    assert normalize_text("  ASK  NOT \n WHAT ") == "ASK NOT WHAT"


def test_missing_model_file_is_a_model_error(en_files, tmp_path):
    broken = dataclasses.replace(en_files, encoder=tmp_path / "encoder.onnx")
    with pytest.raises(ModelError, match="encoder.onnx"):
        StreamingASR(broken)
