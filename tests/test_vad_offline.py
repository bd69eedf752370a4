"""vad-offline ASR engine: silero VAD segments + a sherpa-onnx OfflineRecognizer on a SenseVoice-shaped model.

SenseVoice itself cannot be downloaded here, so tests/support/models.py builds an ONNX file with SenseVoice's inputs
(x [N, T, 560] float, x_length/language/text_norm [N] int32), output (logits [N, T+4, vocab]) and the
metadata sherpa-onnx's loader reads, with random weights: garbage text, but the real loading and decoding
path (the session fixture `sense_voice_dir`). Where `assistant models fetch sensevoice` has installed the real
model, it is tested too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.asr.streaming import AsrUpdate
from assistant.asr.vad_offline import (
    SENSE_VOICE_KEYS,
    OfflineModelFiles,
    VadOfflineASR,
    find_offline_model,
    onnx_metadata,
)
from assistant.audio.vad import SAMPLE_RATE, feed, make_vad, pop_segments
from assistant.errors import ModelError
from assistant.settings import VadSettings
from speechdata.assets import ASSETS, JFK, SILERO
from speechdata.audio import load_clip, pink_noise
from tests.conftest import REPO, require


@pytest.fixture(scope="module")
def vad_settings() -> VadSettings:
    return VadSettings(model=require(SILERO), min_silence_s=0.5)


def test_onnx_metadata_reads_what_sherpa_needs(sense_voice_dir: Path) -> None:
    meta = onnx_metadata(sense_voice_dir / "model.int8.onnx")
    assert set(SENSE_VOICE_KEYS) <= set(meta)
    assert meta["lfr_window_size"] == "7"


def test_one_final_per_vad_segment(sense_voice_dir: Path, vad_settings: VadSettings) -> None:
    clip = require(ASSETS / "kws/zh-wenetspeech-3.3M-mobile/test_wavs/3.wav")
    audio = np.concatenate([load_clip(clip), pink_noise(1.0, -60.0), load_clip(clip)])
    # The segments a plain silero VAD finds with the same settings.
    vad = make_vad(vad_settings)
    feed(vad, audio)
    vad.flush()
    expected = len(pop_segments(vad))
    assert expected >= 2

    asr = VadOfflineASR(find_offline_model(sense_voice_dir), vad_settings)
    finals: list[str] = []
    updates: list[AsrUpdate] = []
    asr.start()
    for i in range(0, len(audio), 1600):
        update = asr.accept(audio[i : i + 1600])
        updates.append(update)
        if update.endpoint:
            finals.append(asr.finish())
            asr.start()  # the daemon starts the next utterance after the next wake word
    tail = asr.finish()
    if tail:
        finals.append(tail)
    assert len(finals) == expected
    assert all(finals)  # garbage, but text: the model was run and its CTC output decoded
    assert not any(u.text for u in updates if not u.endpoint)  # no partials from this engine


def test_finish_flushes_an_open_segment(sense_voice_dir: Path, vad_settings: VadSettings) -> None:
    audio = load_clip(require(JFK))[: 2 * SAMPLE_RATE]
    asr = VadOfflineASR(find_offline_model(sense_voice_dir), vad_settings)
    asr.start()
    assert not asr.accept(audio).endpoint  # speech runs to the end: no endpoint yet
    assert asr.finish() != ""
    assert asr.finish() == ""


def test_engines_switch_by_config_only(sense_voice_dir: Path, vad_settings: VadSettings) -> None:
    """Both engines answer the same calls with the same AsrUpdate type."""
    from assistant.asr.streaming import StreamingASR

    for method in ("start", "accept", "finish"):
        assert callable(getattr(VadOfflineASR, method)) and callable(getattr(StreamingASR, method))
    asr = VadOfflineASR(find_offline_model(sense_voice_dir), vad_settings)
    assert isinstance(asr.accept(np.zeros(1600, dtype=np.float32)), AsrUpdate)


def test_bad_vad_model_path_is_a_model_error(sense_voice_dir: Path, tmp_path: Path) -> None:
    files = find_offline_model(sense_voice_dir)
    with pytest.raises(ModelError, match=r"missing\.onnx.*models fetch vad-silero"):
        VadOfflineASR(files, VadSettings(model=tmp_path / "missing.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="models fetch vad-silero"):
        VadOfflineASR(files, VadSettings(model=garbage))


def test_bad_offline_model_is_a_model_error(tmp_path: Path, vad_settings: VadSettings) -> None:
    with pytest.raises(ModelError, match="models fetch sensevoice"):
        find_offline_model(tmp_path / "nowhere")
    (tmp_path / "tokens.txt").write_text("<blank> 0\n")
    # A real ONNX file that is not SenseVoice: named, not a process exit inside sherpa-onnx.
    (tmp_path / "model.onnx").write_bytes(require(SILERO).read_bytes())
    with pytest.raises(ModelError, match="not a SenseVoice model.*models fetch sensevoice"):
        VadOfflineASR(find_offline_model(tmp_path), vad_settings)
    missing = OfflineModelFiles("paraformer", tokens=tmp_path / "tokens.txt", model=tmp_path / "no.onnx",
                                name="paraformer-zh")
    with pytest.raises(ModelError, match="models fetch paraformer-zh"):
        VadOfflineASR(missing, vad_settings)


def test_real_sense_voice_where_installed(vad_settings: VadSettings) -> None:
    directory = REPO / "models" / "sensevoice"
    if not directory.is_dir():
        pytest.skip("SenseVoice not installed (assistant models fetch sensevoice)")
    asr = VadOfflineASR(find_offline_model(directory), vad_settings)
    clip = load_clip(ASSETS / "audio/zh/funasr-asr_example.wav")
    audio = np.concatenate([clip, np.zeros(SAMPLE_RATE, np.float32)])
    asr.start()
    update = asr.accept(audio)
    assert update.endpoint
    assert "欢迎" in asr.finish()
