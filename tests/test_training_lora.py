"""LoRA: merged weights compute what the unmerged adapters compute; bad adapter files are clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from assistant.errors import ModelError
from training.lora import adapters, apply_lora, merge_adapters, merge_lora_file, save_lora
from training.model import MiniMindConfig, MiniMindForCausalLM


def tiny_model(hidden: int = 64) -> MiniMindForCausalLM:
    torch.manual_seed(0)
    config = MiniMindConfig(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1
    )
    return MiniMindForCausalLM(config).eval()


def trained_adapters(model: MiniMindForCausalLM) -> None:
    apply_lora(model, rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    with torch.no_grad():  # as if trained: B is no longer zero
        for lora in adapters(model).values():
            lora.B.normal_(0.0, 0.05)


def test_merge_equals_running_adapters_unmerged(tmp_path):
    base = tiny_model()
    model = copy.deepcopy(base)
    ids = torch.randint(3, 6400, (2, 17))
    before = base(ids).logits
    trained_adapters(model)
    assert [p.requires_grad for p in model.parameters()].count(
        True
    ) == 2 * 2 * 3  # A and B, 3 targets x 2 layers
    unmerged = model(ids).logits
    assert not torch.allclose(unmerged, before, atol=1e-3)  # the adapters do change the output

    path = save_lora(model, tmp_path / "lora_test_64.pth")
    assert merge_lora_file(base, path) == 6
    torch.testing.assert_close(base(ids).logits, unmerged, atol=1e-5, rtol=1e-5)

    assert merge_adapters(model) == 6  # in-memory merge too, and the hooks are gone
    assert not adapters(model)
    torch.testing.assert_close(model(ids).logits, unmerged, atol=1e-5, rtol=1e-5)


def test_fresh_adapters_start_at_the_base_model():
    base = tiny_model()
    model = copy.deepcopy(base)
    apply_lora(model, rank=2, alpha=4.0, targets=("o_proj",))
    ids = torch.randint(3, 6400, (1, 9))
    torch.testing.assert_close(model(ids).logits, base(ids).logits)


def test_adapter_of_another_model_is_refused(tmp_path):
    small = tiny_model(64)
    trained_adapters(small)
    path = save_lora(small, tmp_path / "a.pth")
    big = tiny_model(128)
    before = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.raises(ModelError, match="another model size"):
        merge_lora_file(big, path)
    assert all(torch.equal(before[k], v) for k, v in big.state_dict().items())  # nothing half-merged
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read LoRA adapter"):
        merge_lora_file(big, tmp_path / "junk.pth")
    with pytest.raises(ModelError, match="not found"):
        merge_lora_file(big, tmp_path / "missing.pth")
