"""A tiny MiniMind trained by the project's own loop, and the real data it trains on (../shared/assets).

Shared by the training tests (stages, export of a trained model, DDP, tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

from speechdata.assets import ASSETS, TOKENIZER_DIR
from tests.conftest import require
from training.loop import TrainResult, train
from training.stages import STAGES

TOKENIZER = TOKENIZER_DIR
IDENTITY = ASSETS / "datasets" / "minimind-lora-identity" / "lora_identity.jsonl"
MEDICAL_DPO = ASSETS / "datasets" / "medicalgpt-zh" / "dpo_zh_500.jsonl"

# One head of 64 (the head size every MiniMind2 uses, so a saved .pth is self-describing), 2 layers, ~0.5M
# params.
TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1, max_length=96,
    batch_size=4, grad_accum=1, warmup_steps=0, init_from="",
    progress=False, log_every=1000, save_every=0, threads=1,
)  # fmt: skip


def tiny(cls, out: Path, data: Path, **overrides):
    return cls(
        **{**TINY, "tokenizer": str(require(TOKENIZER)), "data": str(data), "out_dir": str(out), **overrides}
    )


def train_tiny(stage: str, out: Path, data: Path, **overrides) -> TrainResult:
    """Train the tiny model with stage `stage` of the registry (settings: TINY, then `overrides`)."""
    return train(tiny(STAGES[stage].settings_cls, out, data, **overrides), STAGES[stage])


def overfit_eight(work: Path, out: str) -> TrainResult:
    """SFT on eight identity chats, all of them in every batch, long enough to learn them by heart."""
    data = write_jsonl(work / "eight.jsonl", identity_records(8))
    return train_tiny("sft", work / out, data, batch_size=8, steps=50, lr=1e-2, min_lr_ratio=1.0, weight_decay=0.0)


def identity_records(n: int | None = None) -> list[dict]:
    lines = require(IDENTITY).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:n]]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
