"""What a run trains: the model (loaded from `init_from`, or new from the architecture settings), its optimizer,
and the learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from assistant.errors import ConfigError
from training.model import GENERATIONS, MiniMindConfig, MiniMindForCausalLM, minimind3_config
from training.settings import TrainSettings
from training.weights import load_model

# The settings that describe a new model, named as MiniMindConfig names them.
ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "dropout",
    "use_moe",
    "n_routed_experts",
    "num_experts_per_tok",
    "n_shared_experts",
    "aux_loss_alpha",
)


def build_model(settings: TrainSettings) -> tuple[MiniMindForCausalLM, MiniMindConfig]:
    """The model to train, in fp32: loaded from init_from, or new from the architecture settings (seeded)."""
    if settings.init_from:
        if not Path(settings.init_from).exists():
            raise ConfigError(
                f"--init-from {settings.init_from}: no such file or directory "
                "(train the previous stage first, or give the path of its .pth)"
            )
        model, config = load_model(settings.init_from)
        return model.float(), config
    if settings.generation not in GENERATIONS:
        raise ConfigError(f"--generation {settings.generation!r}: known generations are {', '.join(GENERATIONS)}")
    fields = {name: getattr(settings, name) for name in ARCH_FIELDS}
    if settings.generation == "minimind3":
        # minimind-3's MoE is fixed by its code: top-1, no shared expert (the flags are MiniMind2's).
        fields = {k: v for k, v in fields.items() if k not in ("num_experts_per_tok", "n_shared_experts")}
        config = minimind3_config(**fields)
    else:
        config = MiniMindConfig(**fields)
    torch.manual_seed(settings.seed)
    return MiniMindForCausalLM(config), config


def build_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (LoRA freezes the base, so not all of them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("nothing to train: every parameter is frozen")
    # Norm weights and other vectors are not decayed (decay would pull RMSNorm gains toward 0).
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2))


def lr_at(
    step: int, *, total: int, warmup: int, peak: float, min_ratio: float, progress: float | None = None
) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine down to min_ratio * peak.

    `progress` (0..1), when given, is where the cosine stands instead of the step count: a run trained to a time
    budget follows the clock, so a slow or busy machine still ends its schedule when the budget ends.
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(total - warmup, 1)
    progress = min(max(progress, 0.0), 1.0)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
