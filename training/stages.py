"""The table of training stages: what each one adds to the one loop (training/loop.py).

A stage is its settings class, its dataset encoder, its loss and, where needed, a `prepare` hook that loads
extra models (a DPO reference, a distillation teacher) or attaches adapters (LoRA) before training, and a
`save_final` hook for outputs other than the official `.pth`. `STAGES` maps the command-line name to the stage:
`python -m training NAME` runs it, and `python -m training.NAME` is the same command under its old name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from assistant.errors import ConfigError
from training import lora
from training.data import Batch, Encoded, collate, encode_dpo, encode_pretrain, encode_sft, make_reason_encoder
from training.losses import Context, LossParts, distill_loss, dpo_loss, lm_loss
from training.settings import (
    DistillSettings,
    DPOSettings,
    LoRASettings,
    PretrainSettings,
    ReasonSettings,
    SFTSettings,
    to_dict,
)
from training.weights import freeze, load_frozen


@dataclass(frozen=True)
class Stage:
    name: str  # what the command line, the logs and the checkpoints call it
    output: str  # stem of the final .pth, as MiniMind names it (pretrain, full_sft, ...)
    settings_cls: type
    encoder: Callable[[Any], Callable[[dict[str, Any], Any, int], Encoded]]  # settings -> record encoder
    loss: Callable[[Context, Batch], LossParts]
    summary: str  # one line for `python -m training --help`
    description: str  # the stage's `--help` text
    units: Callable[[Batch], float] = lambda batch: batch.tokens
    collate: Callable[[list[Encoded]], Batch] = collate
    prepare: Callable[[torch.nn.Module, Any, torch.device], dict[str, Any]] | None = None
    save_final: Callable[[torch.nn.Module, Any, Path], Path] | None = None


# ---------------------------------------------------------------------------------------------- stage hooks


def collate_pairs(items: list[Encoded]) -> Batch:
    """Rows [0, n) are the chosen chats, rows [n, 2n) the rejected ones, in the same order (what dpo_loss reads)."""
    return collate([*items, *(e.extra["rejected"] for e in items)])


def load_reference(model: torch.nn.Module, settings: DPOSettings, device: torch.device) -> dict[str, Any]:
    ref_path = settings.reference or settings.init_from
    if not ref_path:
        # From-scratch DPO is unusual but well defined: the reference is the initial policy.
        return {"reference": freeze(copy.deepcopy(model), device)}
    if not Path(ref_path).exists():
        raise ConfigError(f"--reference {ref_path}: no such file")
    return {"reference": load_frozen(ref_path, device)}


def _vocab(model: torch.nn.Module) -> int | None:
    return model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else None


def load_teacher(model: torch.nn.Module, settings: DistillSettings, device: torch.device) -> dict[str, Any]:
    if not settings.teacher:
        raise ConfigError("distill needs --teacher PATH (a .pth or HF dir of a larger model)")
    teacher = load_frozen(settings.teacher, device)
    vocab, t_vocab = _vocab(model), _vocab(teacher)
    if vocab is not None and t_vocab is not None and vocab != t_vocab:
        raise ConfigError(f"teacher {settings.teacher} has vocab {t_vocab}, student {vocab}: they must share it")
    return {"teacher": teacher}


def attach_adapters(model: torch.nn.Module, settings: LoRASettings, device: torch.device) -> dict[str, Any]:
    lora.apply_lora(model, rank=settings.lora_rank, alpha=settings.lora_alpha, targets=settings.lora_targets)
    return {}


def save_adapters(model: torch.nn.Module, settings: LoRASettings, path: Path) -> Path:
    """Only the adapters, named after the data as MiniMind does: lora_identity_512.pth for lora_identity.jsonl."""
    stem = Path(settings.data).stem
    name = stem if stem.startswith("lora_") else f"lora_{stem}"
    out = path.with_name(f"{name}{path.stem.removeprefix('lora')}.pth")
    return lora.save_lora(model, out, meta={"base": settings.init_from, "settings": to_dict(settings)})


def _always(encoder: Callable[[dict[str, Any], Any, int], Encoded]) -> Callable[[Any], Any]:
    """The encoder of a stage whose records do not depend on its settings."""
    return lambda settings: encoder


# ---------------------------------------------------------------------------------------------- the table

# Each stage's `--help` text (argparse folds the lines).
_PRETRAIN = """Pretraining: next-token loss on raw text (`{"text": ...}` per line, MiniMind's pretrain_hq.jsonl)."""
_SFT = """Full supervised fine-tuning on chats (`{"conversations": [...]}`, MiniMind's sft_*.jsonl); loss only on
the assistant's tokens."""
_DPO = """Direct preference optimisation on `{"chosen": [...msgs], "rejected": [...msgs]}` (MiniMind's dpo.jsonl).

loss = -log sigmoid(beta * ((log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))))
with sequence log-probabilities summed over the assistant tokens and a frozen reference model."""
_DISTILL = """White-box distillation on chats: the student matches a teacher's softened next-token distribution.

per target token: kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kl_weight) * CE
(the T^2 keeps the soft-label gradient on the scale of the CE gradient). Teacher and student share the
tokenizer."""
_REASON = """Reasoning distillation: SFT on answers in the `<think>...</think><answer>...</answer>` format (MiniMind's
r1_mix_1024.jsonl), with extra loss weight on the tag tokens so the model learns the format reliably."""

# Per row: name, output stem, settings, encoder, loss; then what the stage changes of the defaults.
_STAGES = (
    Stage("pretrain", "pretrain", PretrainSettings, _always(encode_pretrain), lm_loss,
          summary="next-token loss on raw text", description=_PRETRAIN),
    Stage("sft", "full_sft", SFTSettings, _always(encode_sft), lm_loss,
          summary="full fine-tuning on chats, loss on the assistant's tokens", description=_SFT),
    Stage("lora", "lora", LoRASettings, _always(encode_sft), lm_loss,
          summary="low-rank adapters on a frozen base, saved on their own", description=lora.__doc__ or "",
          prepare=attach_adapters, save_final=save_adapters),
    Stage("dpo", "rlhf", DPOSettings, _always(encode_dpo), dpo_loss,
          summary="direct preference optimisation against a frozen reference", description=_DPO,
          units=lambda batch: float(batch.examples // 2), collate=collate_pairs, prepare=load_reference),
    Stage("distill", "full_dist", DistillSettings, _always(encode_sft), distill_loss,
          summary="white-box distillation from a teacher's soft labels", description=_DISTILL,
          prepare=load_teacher),
    Stage("reason", "reason", ReasonSettings, lambda settings: make_reason_encoder(settings.tag_weight), lm_loss,
          summary="SFT on <think>/<answer> replies, tag tokens weighted", description=_REASON,
          # Units are target tokens, not weights: a tag token counts once in the mean but pulls tag_weight
          # times harder.
          units=lambda batch: float((batch.weights > 0).sum())),
)  # fmt: skip
STAGES: dict[str, Stage] = {stage.name: stage for stage in _STAGES}
