"""bench/genai_export.py: MiniMind2 weights as a Hugging Face Llama folder, the input of onnxruntime-genai's builder.

The useful check is that transformers' LlamaForCausalLM, loaded from the saved folder, computes our model's logits:
then a speed difference between the builder's graph and ours is not a difference in the model. Needs transformers
and torch; CI never installs the `genai` extra, so these skip there. The builder round trip (builder fp32 graph,
greedy decode through onnxruntime-genai = torch's greedy tokens) takes ~30 s and is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is in the export extra")
transformers = pytest.importorskip("transformers", reason="transformers is in the genai extra")

from bench.genai_export import compare_logits, hf_folder, hf_model, llama_config  # noqa: E402
from tests.support.models import random_minimind  # noqa: E402
from training.model import MiniMindConfig, MiniMindForCausalLM, minimind3_config  # noqa: E402

# Not the defaults of MiniMind2 or of LlamaConfig (rope_theta 1e4 / 1e6, eps 1e-5 / 1e-6): a value the conversion
# dropped would show in the logits.
TINY = MiniMindConfig(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rope_theta=5e5, rms_norm_eps=3e-6
)
IDS = [1, 5, 300, 42, 6001, 17, 99, 2048, 7, 3, 1000, 64]


@pytest.fixture(scope="module")
def tiny_model() -> MiniMindForCausalLM:
    return random_minimind(TINY, seed=5)


def test_hf_llama_computes_our_logits(tiny_model):
    figures = compare_logits(tiny_model, hf_model(tiny_model), IDS)
    assert figures["max_abs_diff"] < 1e-4 * max(1.0, figures["ref_max_abs"]), figures
    assert figures["top1_agreement"] == 1.0


def test_saved_folder_reloads_with_the_same_logits(tiny_model, tmp_path: Path):
    folder = hf_folder(tiny_model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["tie_word_embeddings"] is True
    assert config["num_key_value_heads"] == 2 and config["intermediate_size"] == TINY.intermediate_size
    reloaded = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    # Tied: the head is the embedding, not a second (random) matrix.
    assert torch.equal(reloaded.lm_head.weight, tiny_model.model.embed_tokens.weight)
    figures = compare_logits(tiny_model, reloaded, IDS)
    assert figures["max_abs_diff"] < 1e-4 * max(1.0, figures["ref_max_abs"]), figures


def test_refuses_what_is_not_llama_shaped():
    with pytest.raises(ValueError, match="not Llama-shaped"):
        llama_config(minimind3_config(hidden_size=64, num_hidden_layers=1))
    with pytest.raises(ValueError, match="MoE"):
        llama_config(MiniMindConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, use_moe=True))


@pytest.mark.slow
def test_builder_graph_in_genai_decodes_our_greedy_tokens(tiny_model, tmp_path: Path):
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is in the genai extra")
    pytest.importorskip("onnx_ir", reason="onnx-ir (the builder's graph library) is in the genai extra")
    from bench.genai import session_overlay
    from bench.genai_export import build

    folder = build(hf_folder(tiny_model, tmp_path / "hf"), tmp_path / "fp32", "fp32", 32)
    config = og.Config(str(folder))
    config.clear_providers()
    config.overlay(session_overlay(1))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(IDS) + 6)
    generator = og.Generator(model, params)
    generator.append_tokens(IDS)
    theirs = []
    while not generator.is_done():
        generator.generate_next_token()
        theirs.append(int(generator.get_next_tokens()[0]))
    seq = list(IDS)
    with torch.inference_mode():
        for _ in range(len(theirs)):
            seq.append(int(tiny_model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert theirs == seq[len(IDS) :] and len(theirs) > 0, (theirs, seq[len(IDS) :])
