"""LoRA: low-rank adapters on chosen Linear layers, trained with the base frozen and saved on their own.

An adapter adds (alpha / r) * B @ A to a Linear's weight without touching it: A [r, in] starts small and random,
B [out, r] starts at zero, so training starts exactly at the base model. The adapter rides on the Linear as a
child module `lora` plus a forward hook, so the base's parameter names (the official checkpoint keys) never change.

`python -m training.lora` trains adapters on chats; `merge_lora_file(model, path)` (used by assistant-export)
folds a saved adapter file into a model's weights in place.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assistant.errors import ModelError
from training.checkpoint import atomic_torch_save, load_tagged

log = logging.getLogger(__name__)

FORMAT = "minimind-lora"
VERSION = 1


class LoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float) -> None:
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        return (x @ self.A.t()) @ self.B.t() * self.scale

    def delta(self) -> torch.Tensor:  # [out, in], what merging adds to the weight
        return (self.B.float() @ self.A.float()) * self.scale


def _add_adapter_output(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    return output + module.lora(inputs[0]).to(output.dtype)


def apply_lora(
    model: nn.Module, *, rank: int, alpha: float, targets: tuple[str, ...] | list[str]
) -> list[str]:
    """Attach adapters to every nn.Linear whose last name is in `targets`; freeze everything else."""
    if rank <= 0:
        raise ModelError(f"LoRA rank must be positive, not {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            module.lora = LoRA(module.in_features, module.out_features, rank=rank, alpha=alpha).to(
                module.weight.device
            )
            module._lora_hook = module.register_forward_hook(_add_adapter_output)
            names.append(name)
    if not names:
        raise ModelError(f"no Linear layer named {', '.join(targets)} in the model: nothing to adapt")
    log.info("LoRA r=%d alpha=%g on %d layers (%s)", rank, alpha, len(names), ", ".join(sorted(set(targets))))
    return names


def adapters(model: nn.Module) -> dict[str, LoRA]:
    return {
        name: m.lora for name, m in model.named_modules() if isinstance(m, nn.Linear) and hasattr(m, "lora")
    }


def save_lora(model: nn.Module, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> Path:
    found = adapters(model)
    if not found:
        raise ModelError("the model has no LoRA adapters to save")
    first = next(iter(found.values()))
    tensors = {}
    for name, lora in found.items():
        tensors[f"{name}.A"] = lora.A.detach().cpu().float().contiguous()
        tensors[f"{name}.B"] = lora.B.detach().cpu().float().contiguous()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "rank": first.rank,
        "alpha": first.scale * first.rank,
        "modules": sorted(found),
        "tensors": tensors,
        "meta": meta or {},
    }
    atomic_torch_save(payload, path)
    return Path(path)


def merge_adapters(model: nn.Module) -> int:
    """Fold attached adapters into their Linear weights and detach them (the model is plain again)."""
    merged = 0
    for _name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and hasattr(module, "lora"):
            with torch.no_grad():
                module.weight += module.lora.delta().to(module.weight.dtype)
            module._lora_hook.remove()
            del module.lora
            del module._lora_hook
            merged += 1
    return merged


def merge_lora_file(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Merge the adapter file at `path` into `model`'s Linear weights in place; returns the layers merged.

    Strict: every adapter must find its Linear with matching shapes, or nothing is changed.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"LoRA adapter file not found: {path}")
    payload = load_tagged(path, fmt=FORMAT, version=VERSION, kind="LoRA adapter", error=ModelError, weights_only=True)
    scale = float(payload["alpha"]) / int(payload["rank"])
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    updates = []
    for name in payload["modules"]:
        layer = linears.get(name)
        if layer is None:
            raise ModelError(
                f"{path}: adapter for {name}, but the model has no such Linear layer "
                "(was it trained on another architecture?)"
            )
        a, b = payload["tensors"][f"{name}.A"], payload["tensors"][f"{name}.B"]
        if b.shape[0] != layer.out_features or a.shape[1] != layer.in_features:
            raise ModelError(
                f"{path}: adapter {name} is {b.shape[0]}x{a.shape[1]}, the layer "
                f"{layer.out_features}x{layer.in_features} (another model size?)"
            )
        updates.append((layer, (b.float() @ a.float()) * scale))
    with torch.no_grad():
        for layer, delta in updates:
            layer.weight += delta.to(layer.weight.device, layer.weight.dtype)
    log.info(
        "merged %d LoRA adapters from %s (r=%d, alpha=%g)",
        len(updates),
        path,
        payload["rank"],
        payload["alpha"],
    )
    return len(updates)


if __name__ == "__main__":  # `python -m training.lora`: the lora stage (training/stages.py) under its old name
    from training.entry import run_alias

    raise SystemExit(run_alias("lora"))
