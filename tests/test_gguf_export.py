"""bench/gguf_export.py: MiniMind2 weights as a llama GGUF (metadata, tensor names, the RoPE row order).

gguf is pure Python and in the dev extra, so these run in CI; torch is the export extra's. The one test that
loads the file in llama.cpp needs the optional `bench` extra (llama-cpp-python, built from source) and skips
without it, also under CI: CI never installs that extra.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from speechdata.assets import TOKENIZER_DIR
from tests.conftest import require
from tests.support.models import random_minimind

gguf = pytest.importorskip("gguf", reason="gguf is in the dev extra (pip install -e '.[dev]')")
torch = pytest.importorskip("torch", reason="torch is in the export extra")

from bench.gguf_export import (  # noqa: E402 - after the importorskip guards
    PRE_TOKENIZER,
    compare_logits,
    compare_tokenizer,
    rope_to_interleaved,
    state_arrays,
    write_gguf,
)
from training.model import MiniMindConfig, MiniMindForCausalLM, minimind3_config  # noqa: E402

TINY = MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def tokenizer_json() -> Path:
    return require(TOKENIZER_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def tiny_model() -> MiniMindForCausalLM:
    return random_minimind(TINY, seed=3)


@pytest.fixture(scope="module")
def written(tiny_model, tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    return write_gguf(state_arrays(tiny_model), TINY, tokenizer_json, out)


def _field(reader, key: str):
    field = reader.get_field(key)
    assert field is not None, f"GGUF key {key} missing"
    return field.contents()


def test_metadata_is_llama_with_minimind_hyperparameters(written: Path) -> None:
    reader = gguf.GGUFReader(str(written))
    assert _field(reader, "general.architecture") == "llama"
    expected = {
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": TINY.intermediate_size,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.context_length": TINY.max_position_embeddings,
        "llama.vocab_size": 6400,
    }
    for key, value in expected.items():
        assert _field(reader, key) == value, key
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(1e6)
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)


def test_tokenizer_is_byte_level_bpe_with_the_gpt2_pre_tokenizer(written: Path, tokenizer_json: Path) -> None:
    reader = gguf.GGUFReader(str(written))
    source = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    # gpt-2's split regex is the ByteLevel one of tokenizer.json (smollm, MiniMind README's, splits digits apart)
    assert _field(reader, "tokenizer.ggml.pre") == PRE_TOKENIZER == "gpt-2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 6400
    for token, index in list(source["model"]["vocab"].items())[:50]:
        assert tokens[index] == token
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and types[3] == gguf.TokenType.NORMAL
    merges = _field(reader, "tokenizer.ggml.merges")
    assert len(merges) == len(source["model"]["merges"])
    first = source["model"]["merges"][0]  # ["Ġ", "t"] (tokenizers >= 0.20) or "Ġ t"
    assert merges[0] == (first if isinstance(first, str) else " ".join(first))
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 1
    assert _field(reader, "tokenizer.ggml.eos_token_id") == 2
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False


def test_tensors_map_to_llama_names_with_the_lm_head_tied(written: Path, tiny_model) -> None:
    reader = gguf.GGUFReader(str(written))
    tensors = {t.name: t for t in reader.tensors}
    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(2) for name in per_layer
    }
    assert set(tensors) == expected  # no output.weight: llama.cpp then uses token_embd (MiniMind's tying)
    state = state_arrays(tiny_model)

    def read(name: str) -> np.ndarray:  # GGUF lists dims fastest first; numpy data is row-major as written
        return np.asarray(tensors[name].data).reshape(state_shape(name))

    def state_shape(name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(tensors[name].shape.tolist()))

    np.testing.assert_array_equal(read("token_embd.weight"), state["model.embed_tokens.weight"])
    np.testing.assert_array_equal(read("output_norm.weight"), state["model.norm.weight"])
    np.testing.assert_array_equal(read("blk.1.ffn_down.weight"), state["model.layers.1.mlp.down_proj.weight"])
    ffn_norm = state["model.layers.0.post_attention_layernorm.weight"]
    np.testing.assert_array_equal(read("blk.0.ffn_norm.weight"), ffn_norm)
    q = state["model.layers.0.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(read("blk.0.attn_q.weight"), rope_to_interleaved(q, 4))
    k = state["model.layers.1.self_attn.k_proj.weight"]
    np.testing.assert_array_equal(read("blk.1.attn_k.weight"), rope_to_interleaved(k, 2))


def test_permuted_rows_under_adjacent_pair_rope_give_minimind_rotate_half_rope() -> None:
    """The permutation is right iff RoPE on adjacent pairs of W'x (llama.cpp) equals RoPE on the halves of Wx
    (MiniMind), up to the same row order: then q.k dot products, hence attention, are unchanged."""
    from training.model import apply_rope, rope_tables

    heads, head_dim, hidden, positions = 2, 8, 6, 5
    rng = np.random.default_rng(0)
    w = rng.standard_normal((heads * head_dim, hidden)).astype(np.float32)
    x = rng.standard_normal((positions, hidden)).astype(np.float32)
    cos, sin = rope_tables(head_dim, positions, 1e4)
    q_hf = torch.from_numpy(x @ w.T).view(positions, heads, head_dim).transpose(0, 1)  # [heads, T, D]
    hf = apply_rope(q_hf, cos, sin).numpy()
    q_gg = (x @ rope_to_interleaved(w, heads).T).reshape(positions, heads, head_dim // 2, 2)
    theta = 1e4 ** (-np.arange(0, head_dim, 2) / head_dim)  # [D/2]
    angle = np.arange(positions)[:, None, None] * theta[None, None, :]  # [T, 1, D/2]
    a, b = q_gg[..., 0], q_gg[..., 1]
    rotated = np.stack([a * np.cos(angle) - b * np.sin(angle), a * np.sin(angle) + b * np.cos(angle)], -1)
    # back to MiniMind's order: pair i of head h is (i, i + D/2)
    back = np.concatenate([rotated[..., 0], rotated[..., 1]], axis=-1).transpose(1, 0, 2)  # [heads, T, D]
    np.testing.assert_allclose(back, hf, atol=1e-5)
    q_dot = hf[0] @ hf[0].T
    gg = rotated.transpose(1, 0, 2, 3).reshape(heads, positions, head_dim)
    np.testing.assert_allclose(gg[0] @ gg[0].T, q_dot, atol=1e-4)


def test_refuses_what_is_not_llama_shaped(tmp_path: Path, tokenizer_json: Path) -> None:
    config = minimind3_config(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="minimind-3"):
        write_gguf({}, config, tokenizer_json, tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="f16"):
        write_gguf({}, TINY, tokenizer_json, tmp_path / "x.gguf", dtype="q8")


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (the optional bench extra, never installed in CI) is not installed",
)
def test_llama_cpp_runs_it_like_torch(written: Path, tiny_model, tokenizer_json: Path) -> None:
    ids = np.random.default_rng(5).integers(3, 6400, 24).tolist()
    figures = compare_logits(written, tiny_model, ids, threads=1)
    assert figures["max_abs_diff"] < 1e-3 * max(1.0, figures["ref_max_abs"]), figures
    assert figures["top1_agreement"] == 1.0, figures
    assert figures["greedy_gguf"] == figures["greedy_torch"]
    texts = ["你好，我是MiniMind。Hello world! 今天天气怎么样？", "<|im_start|>user\nit's 12 + 30 ¥200?<|im_end|>\n"]
    assert compare_tokenizer(written, tokenizer_json, texts) == [(t, True) for t in texts]
