"""Every stage through the one loop on a tiny model: losses fall, SFT overfits, DPO starts at log 2, resume is
exact, bad resumes are refused. Real tokenizer and real MiniMind-format data from ../shared/assets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from assistant.errors import ConfigError
from tests.conftest import require
from tests.support.training import (
    IDENTITY,
    MEDICAL_DPO,
    TOKENIZER,
    identity_records,
    overfit_eight,
    train_tiny,
    write_jsonl,
)
from training import entry


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny SFT-trained checkpoint (official .pth + config.json) for the stages that start from weights."""
    out = tmp_path_factory.mktemp("base")
    return train_tiny("sft", out, require(IDENTITY), steps=8, lr=3e-3).final_path


def falls(losses: list[float]) -> bool:
    return sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


def test_pretrain_loss_falls_dense_and_moe(tmp_path):
    texts = [{"text": r["conversations"][1]["content"]} for r in identity_records(32)]
    data = write_jsonl(tmp_path / "pretrain.jsonl", texts)
    dense = train_tiny("pretrain", tmp_path / "dense", data, steps=8, lr=5e-3)
    assert falls(dense.losses), dense.losses
    assert dense.final_path.name == "pretrain_64.pth" and dense.final_path.is_file()
    moe_arch = dict(use_moe=True, n_routed_experts=2, num_experts_per_tok=1)
    moe = train_tiny("pretrain", tmp_path / "moe", data, steps=8, lr=5e-3, **moe_arch)
    assert falls(moe.losses), moe.losses
    aux = [json.loads(line)["aux_loss"] for line in (tmp_path / "moe" / "metrics.jsonl").open()]
    assert all(a > 0 for a in aux)  # the load-balancing loss is part of the objective
    assert moe.final_path.name == "pretrain_64_moe.pth"


def test_sft_overfits_eight_examples(tmp_path):
    result = overfit_eight(tmp_path, "out")
    assert result.losses[-1] < 0.05, result.losses[-5:]


def test_lora_trains_only_adapters(tmp_path, base):
    data = write_jsonl(tmp_path / "lora_identity.jsonl", identity_records(8))
    # The whole set in each batch: the loss falls step after step.
    adapter_settings = dict(init_from=str(base), lora_rank=4)
    result = train_tiny("lora", tmp_path / "lora", data, steps=6, lr=2e-2, batch_size=8, **adapter_settings)
    assert falls(result.losses), result.losses
    assert result.final_path.name == "lora_identity_64.pth"
    adapter = torch.load(result.final_path, weights_only=True)
    assert adapter["rank"] == 4 and len(adapter["modules"]) == 2 * 7  # 2 layers x q,k,v,o,gate,up,down
    assert all(
        name.endswith((".A", ".B")) for name in adapter["tensors"]
    )  # adapters only, never base weights


def test_dpo_starts_at_log2_and_loss_falls(tmp_path, base):
    pairs = []
    for line in require(MEDICAL_DPO).read_text(encoding="utf-8").splitlines()[:8]:
        row = json.loads(line)  # ShareGPT-style source converted to MiniMind's dpo.jsonl format
        question = row["conversations"][0]["value"][:200]
        user = {"role": "user", "content": question}
        pairs.append(
            {
                "chosen": [user, {"role": "assistant", "content": row["chosen"][:200]}],
                "rejected": [user, {"role": "assistant", "content": row["rejected"][:200]}],
            }
        )
    data = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    result = train_tiny("dpo", tmp_path / "dpo", data, init_from=str(base), steps=6, lr=2e-3, beta=0.5, max_length=128)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert falls(result.losses), result.losses


def test_distill_loss_falls(tmp_path, base):
    soft = dict(teacher=str(base), temperature=2.0, kl_weight=0.7)
    result = train_tiny("distill", tmp_path / "student", require(IDENTITY), steps=8, lr=5e-3, **soft)
    assert falls(result.losses), result.losses


def test_reason_loss_falls(tmp_path):
    records = [
        {
            "conversations": [
                r["conversations"][0],
                {
                    "role": "assistant",
                    "content": f"<think>The user asks who I am.</think><answer>{r['conversations'][1]['content']}"
                    "</answer>",
                },
            ]
        }
        for r in identity_records(16)
    ]
    data = write_jsonl(tmp_path / "r1.jsonl", records)
    result = train_tiny("reason", tmp_path / "reason", data, steps=8, lr=5e-3)
    assert falls(result.losses), result.losses


def test_resume_continues_with_the_same_losses(tmp_path):
    data = require(IDENTITY)
    common = dict(steps=6, lr=3e-3, dropout=0.1, save_every=2)  # dropout: the RNG state must be restored too
    whole = train_tiny("sft", tmp_path / "whole", data, **common)
    first = train_tiny("sft", tmp_path / "cut", data, stop_after=3, **common)
    assert first.final_path is None and first.step == 3
    rest = train_tiny("sft", tmp_path / "cut", data, **common)
    assert rest.step == 6 and rest.final_path is not None
    assert first.losses + rest.losses == pytest.approx(whole.losses, abs=1e-6)


def test_resume_with_another_model_config_is_refused(tmp_path):
    data = require(IDENTITY)
    train_tiny("sft", tmp_path / "out", data, steps=4, stop_after=1)
    wider = dict(hidden_size=128, num_attention_heads=2)
    with pytest.raises(ConfigError, match=r"model config differs \(hidden_size: checkpoint 64 vs now 128"):
        train_tiny("sft", tmp_path / "out", data, steps=4, **wider)
    # --no-resume starts over instead
    fresh = train_tiny("sft", tmp_path / "out", data, steps=1, resume=False, **wider)
    assert fresh.step == 1


@pytest.mark.parametrize("command", [["sft"], []], ids=["python -m training sft", "python -m training.sft"])
def test_stage_cli_reports_user_errors_in_one_line(tmp_path, capsys, command):
    argv = [
        "--init-from",
        str(tmp_path / "nope.pth"),
        "--data",
        str(require(IDENTITY)),
        "--out-dir",
        str(tmp_path),
        "--tokenizer",
        str(require(TOKENIZER)),
    ]
    code = entry.main([*command, *argv]) if command else entry.run_alias("sft", argv)
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "nope.pth: no such file" in err and "Traceback" not in err
