"""bench/quant_trained.py on a checkpoint trained by the project's loop: every form is exported and judged by the
parity rule, and the multiple-choice table compares each form with torch on the same questions."""

from __future__ import annotations

import json

from bench.quant_trained import QUANTS, main, shared_chats
from tests.conftest import require
from tests.support.training import IDENTITY, overfit_eight


def test_table_of_a_trained_checkpoint(tmp_path, assets, capsys):
    result = overfit_eight(tmp_path, "sft")
    mc_file = require(assets / "datasets" / "ceval" / "val" / "computer_network_val.csv")
    work = tmp_path / "bench"
    args = [
        "--checkpoint", str(result.final_path), "--held", str(require(IDENTITY)), "--held-limit", "4",
        "--parity-chats", "3", "--mc", str(mc_file), "--mc-limit", "8", "--work", str(work), "--threads", "1",
    ]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))

    # Trained on eight chats by heart: far more peaked than random weights of the same shape.
    peaked = report["peakedness"]
    assert peaked["trained"]["mean_max_prob"] > 5 * peaked["random"]["mean_max_prob"]
    assert peaked["trained"]["mean_entropy"] < peaked["random"]["mean_entropy"]

    for key in ("parity", "parity_held_out"):
        for quant in QUANTS:
            row = report[key][quant]
            assert 0 <= row["top1_agreement_all"] <= 1 and row["mean_kl"] >= 0
            assert row["passes"] == (row["top1_agreement_confident"] is None or row["top1_agreement_confident"] >= 0.98)
            assert f"| {quant} |" in table
        assert report[key]["int8"]["mean_kl"] <= report[key]["int4"]["mean_kl"]  # 8 bits lose less than 4

    mc = report["mc"]
    assert list(mc) == ["torch", "fp32", *QUANTS]
    assert all(r["questions"] == 8 for r in mc.values())
    # fp32 ONNX computes torch's function: the same letter wins on every question.
    assert mc["fp32"]["agreement_with_torch"] == 1.0 and mc["fp32"]["delta_vs_torch"]["delta"] == 0.0
    assert mc["torch"]["accuracy_ci95"][0] <= mc["torch"]["accuracy"] <= mc["torch"]["accuracy_ci95"][1]
    assert "same letter as torch" in table


def test_shared_sft_chats_are_minimind_conversations(assets):
    require(assets / "datasets" / "llamafactory-demo" / "alpaca_zh_demo.json")
    chats = shared_chats()
    assert len(chats) == 2000  # 1,000 alpaca_zh + 1,000 medical
    for chat in chats:
        assert chat[0]["role"] == "user" and chat[-1]["role"] == "assistant"
        assert all(isinstance(m["content"], str) and m["content"] for m in chat)
