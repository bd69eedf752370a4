"""vad-offline ASR engine: silero VAD segments + a sherpa-onnx OfflineRecognizer on a SenseVoice-shaped model.

SenseVoice itself cannot be downloaded here, so the test builds an ONNX file with SenseVoice's inputs
(x [N, T, 560] float, x_length/language/text_norm [N] int32), output (logits [N, T+4, vocab]) and the
metadata sherpa-onnx's loader reads, with random weights: garbage text, but the real loading and decoding
path. Where `assistant models fetch sensevoice` has installed the real model, it is tested too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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
from bench.idle import ASSETS, SILERO, load_16k, pink_noise
from tests.conftest import REPO, require

VOCAB = 64
FEAT = 80 * 7  # 80 fbank bins x lfr_window_size 7


def build_sense_voice(directory: Path, seed: int = 0) -> Path:
    """A SenseVoice-shaped model.onnx + tokens.txt in `directory`; returns the directory."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((FEAT, VOCAB)).astype(np.float32)
    # Columns summing to zero: a feature offset common to all bins (loudness) does not pick the token, so
    # frames differ and CTC emits more than one symbol.
    weight -= weight.mean(axis=0, keepdims=True)
    bias = np.zeros(VOCAB, dtype=np.float32)
    bias[0] = -2.0  # fewer blanks: the garbage text is not empty
    prompts = rng.standard_normal((16, FEAT)).astype(np.float32)
    nodes = [
        # 4 prompt frames (language, event, emotion, text_norm) in front of the features, as SenseVoice does
        helper.make_node("Gather", ["prompts", "language"], ["lang_emb"], axis=0),
        helper.make_node("Gather", ["prompts", "text_norm"], ["norm_emb"], axis=0),
        helper.make_node("Concat", ["lang_emb", "norm_emb", "norm_emb", "lang_emb"], ["prefix2d"], axis=0),
        helper.make_node("Mul", ["prefix2d", "zero"], ["prefix_scaled"]),
        helper.make_node("Unsqueeze", ["prefix_scaled", "axis0"], ["prefix"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "idx0"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "neg1", "feat"], ["prefix_shape"], axis=0),
        helper.make_node("Reshape", ["prefix", "prefix_shape"], ["prefix_b"]),
        helper.make_node("Concat", ["prefix_b", "x"], ["frames"], axis=1),
        helper.make_node("MatMul", ["frames", "weight"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
        # x_length is used (times zero) so that onnxruntime keeps it as an input, as sherpa-onnx passes it
        helper.make_node("Cast", ["x_length"], ["len_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["len_f", "axes12"], ["len_3d"]),
        helper.make_node("Mul", ["len_3d", "zero"], ["len_zero"]),
        helper.make_node("Add", ["biased", "len_zero"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(prompts, "prompts"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "idx0"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "neg1"),
        numpy_helper.from_array(np.array([FEAT], dtype=np.int64), "feat"),
    ]
    graph = helper.make_graph(
        nodes,
        "sense_voice_shaped",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", FEAT]),
            helper.make_tensor_value_info("x_length", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("language", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("text_norm", TensorProto.INT32, ["N"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T4", VOCAB])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = {
        "vocab_size": str(VOCAB), "lfr_window_size": "7", "lfr_window_shift": "6", "normalize_samples": "0",
        "with_itn": "14", "without_itn": "15", "lang_auto": "0", "lang_zh": "3", "lang_en": "4",
        "lang_yue": "7", "lang_ja": "11", "lang_ko": "12", "lang_nospeech": "13",
        "neg_mean": ",".join(["-8.0"] * FEAT), "inv_stddev": ",".join(["0.25"] * FEAT),
        "model_type": "sense_voice_ctc", "comment": "built by tests/test_vad_offline.py",
    }  # fmt: skip
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.int8.onnx"))
    symbols = ["<blank>", "<s>", "</s>"] + [f"<|tag{i}|>" for i in range(13)]
    symbols += [chr(ord("a") + i % 26) + ("" if i < 26 else str(i)) for i in range(VOCAB - len(symbols))]
    (directory / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)))
    return directory


@pytest.fixture(scope="module")
def sense_voice_dir(tmp_path_factory) -> Path:
    return build_sense_voice(tmp_path_factory.mktemp("sensevoice"))


@pytest.fixture(scope="module")
def vad_settings() -> VadSettings:
    return VadSettings(model=require(SILERO), min_silence_s=0.5)


def test_onnx_metadata_reads_what_sherpa_needs(sense_voice_dir: Path) -> None:
    meta = onnx_metadata(sense_voice_dir / "model.int8.onnx")
    assert set(SENSE_VOICE_KEYS) <= set(meta)
    assert meta["lfr_window_size"] == "7"


def test_one_final_per_vad_segment(sense_voice_dir: Path, vad_settings: VadSettings) -> None:
    clip = require(ASSETS / "kws/zh-wenetspeech-3.3M-mobile/test_wavs/3.wav")
    audio = np.concatenate([load_16k(clip), pink_noise(1.0, -60.0), load_16k(clip)])
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
    audio = load_16k(require(ASSETS / "audio/en/whisper-jfk.flac"))[: 2 * SAMPLE_RATE]
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
    clip = load_16k(ASSETS / "audio/zh/funasr-asr_example.wav")
    audio = np.concatenate([clip, np.zeros(SAMPLE_RATE, np.float32)])
    asr.start()
    update = asr.accept(audio)
    assert update.endpoint
    assert "欢迎" in asr.finish()
