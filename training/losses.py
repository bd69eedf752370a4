"""Every stage's loss, and the types a loss sees and returns.

A loss returns a *sum* over its units (target tokens, or preference pairs); the loop divides by the units of the
whole global batch (see training/loop.py), so a loss never averages itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from training.data import IGNORE, Batch


@dataclass(frozen=True)
class Context:
    """What a stage's loss sees: the (possibly DDP-wrapped) model and the stage's extra models."""

    model: torch.nn.Module
    settings: Any
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor  # sum of the stage loss over `units`
    aux: torch.Tensor  # MoE load-balancing loss of this forward (already scaled by aux_loss_alpha)
    metrics: dict[str, float] = field(default_factory=dict)  # sums over units, averaged by the loop


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) at each position, 0 where the label is IGNORE. logits [B,T,V], labels [B,T] -> [B,T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    safe = labels.clamp(min=0)
    out = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(labels == IGNORE, 0.0)


def moe_aux(out: Any) -> torch.Tensor:
    """The MoE load-balancing loss of a forward's output; 0 for a dense model."""
    aux = getattr(out, "aux_loss", None)
    if aux is None:
        return torch.zeros(())
    return aux if isinstance(aux, torch.Tensor) else torch.tensor(float(aux))


def lm_loss(ctx: Context, batch: Batch) -> LossParts:
    """Weighted next-token cross-entropy summed over target tokens (pretrain, SFT, LoRA, reasoning)."""
    out = ctx.model(batch.input_ids)
    nll = -token_logprobs(out.logits, batch.labels)  # [B, T]
    return LossParts(total=(nll * batch.weights).sum(), aux=moe_aux(out))


def sequence_logprobs(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
    """Summed log-probability of each row's target tokens ([B]) and the forward's output."""
    out = model(batch.input_ids)
    return token_logprobs(out.logits, batch.labels).sum(dim=-1), out


def dpo_loss(ctx: Context, batch: Batch) -> LossParts:
    """-log sigmoid(beta * ((log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected)))), summed
    over the pairs. Rows [0, n) of the batch are the chosen chats, rows [n, 2n) the rejected ones."""
    n = batch.input_ids.shape[0] // 2
    policy, out = sequence_logprobs(ctx.model, batch)
    with torch.no_grad():
        ref, _ = sequence_logprobs(ctx.extras["reference"], batch)
    margin = (policy[:n] - policy[n:]) - (ref[:n] - ref[n:])
    losses = -F.logsigmoid(ctx.settings.beta * margin)
    return LossParts(total=losses.sum(), aux=moe_aux(out))


def distill_loss(ctx: Context, batch: Batch) -> LossParts:
    """Per target token: kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kl_weight) * CE.

    The T^2 keeps the soft-label gradient on the scale of the CE gradient.
    """
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
    return LossParts(total=total, aux=moe_aux(out))
