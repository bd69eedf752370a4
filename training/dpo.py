"""Direct preference optimisation on `{"chosen": [...msgs], "rejected": [...msgs]}` (MiniMind's dpo.jsonl).

loss = -log sigmoid(beta * ((log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))))
with sequence log-probabilities summed over the assistant tokens and a frozen reference model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.data import Batch, Encoded, collate, encode_dpo
from training.loop import Context, LossParts, Stage, _aux, run_cli, token_logprobs
from training.settings import DPOSettings


def collate_pairs(items: list[Encoded]) -> Batch:
    """Rows [0, n) are the chosen chats, rows [n, 2n) the rejected ones, in the same order."""
    return collate([*items, *(e.extra["rejected"] for e in items)])


def load_frozen(path: str, device: torch.device) -> torch.nn.Module:
    from training.weights import load_model

    model, _ = load_model(path)
    model = model.float().to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prepare(model: torch.nn.Module, settings: DPOSettings, device: torch.device) -> dict[str, Any]:
    ref_path = settings.reference or settings.init_from
    if not ref_path:
        # From-scratch DPO is unusual but well defined: the reference is the initial policy.
        import copy

        reference = copy.deepcopy(model).to(device).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return {"reference": reference}
    if not Path(ref_path).exists():
        from assistant.errors import ConfigError

        raise ConfigError(f"--reference {ref_path}: no such file")
    return {"reference": load_frozen(ref_path, device)}


def sequence_logprobs(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
    out = model(batch.input_ids)
    return token_logprobs(out.logits, batch.labels).sum(dim=-1), out  # [2n]


def dpo_loss(ctx: Context, batch: Batch) -> LossParts:
    n = batch.input_ids.shape[0] // 2
    policy, out = sequence_logprobs(ctx.model, batch)
    with torch.no_grad():
        ref, _ = sequence_logprobs(ctx.extras["reference"], batch)
    margin = (policy[:n] - policy[n:]) - (ref[:n] - ref[n:])
    losses = -F.logsigmoid(ctx.settings.beta * margin)
    return LossParts(total=losses.sum(), aux=_aux(out))


STAGE = Stage(
    name="dpo",
    output="rlhf",
    settings_cls=DPOSettings,
    encoder=lambda settings: encode_dpo,
    loss=dpo_loss,
    units=lambda batch: float(batch.examples // 2),
    collate=collate_pairs,
    prepare=prepare,
    description=__doc__,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
