"""White-box distillation on chats: the student matches a teacher's softened next-token distribution.

per target token: kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kl_weight) * CE
(the T^2 keeps the soft-label gradient on the scale of the CE gradient). Teacher and student share the
tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from assistant.errors import ConfigError
from training.data import IGNORE, Batch, encode_sft
from training.dpo import load_frozen
from training.loop import Context, LossParts, Stage, _aux, run_cli, token_logprobs
from training.settings import DistillSettings


def prepare(model: torch.nn.Module, settings: DistillSettings, device: torch.device) -> dict[str, Any]:
    if not settings.teacher:
        raise ConfigError("distill needs --teacher PATH (a .pth or HF dir of a larger model)")
    teacher = load_frozen(settings.teacher, device)
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else None
    t_vocab = (
        teacher.get_output_embeddings().weight.shape[0] if hasattr(teacher, "get_output_embeddings") else None
    )
    if vocab is not None and t_vocab is not None and vocab != t_vocab:
        raise ConfigError(
            f"teacher {settings.teacher} has vocab {t_vocab}, student {vocab}: they must share it"
        )
    return {"teacher": teacher}


def distill_loss(ctx: Context, batch: Batch) -> LossParts:
    s = ctx.settings
    out = ctx.model(batch.input_ids)
    with torch.no_grad():
        teacher_logits = ctx.extras["teacher"](batch.input_ids).logits.float()
    mask = batch.labels != IGNORE  # [B, T]
    student = out.logits.float()[mask]  # [N, V]
    teacher = teacher_logits[mask]
    t = s.temperature
    kl = F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1)  # [N]
    nll = -token_logprobs(out.logits, batch.labels)[mask]
    total = s.kl_weight * t * t * kl.sum() + (1.0 - s.kl_weight) * nll.sum()
    return LossParts(total=total, aux=_aux(out))


STAGE = Stage(
    name="distill",
    output="full_dist",
    settings_cls=DistillSettings,
    encoder=lambda settings: encode_sft,
    loss=distill_loss,
    prepare=prepare,
    description=__doc__,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
