"""Where a run runs: one process or a torchrun rank (DDP: NCCL on GPU, gloo on CPU), its device and its autocast
dtype, and the few collective operations the loop needs."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from assistant.errors import ConfigError
from training.settings import TrainSettings


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for plain fp32

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def setup_runtime(settings: TrainSettings) -> Runtime:
    """Device, process group (under torchrun) and autocast dtype from the settings and torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = settings.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {settings.device}: no CUDA device here (use --device cpu)")
        device = torch.device("cuda", local_rank if world > 1 or want == "cuda" else int(want.split(":")[1]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    return Runtime(rank, world, local_rank, device, _amp_dtype(settings.dtype, device))


def _amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if name not in dtypes:
        raise ConfigError(f"--dtype must be auto, bf16, fp16 or fp32, not {name!r}")
    amp = dtypes[name]
    if amp is not None and device.type == "cpu":
        raise ConfigError(f"--dtype {name} is for GPUs; on CPU training runs in fp32 (--dtype fp32)")
    return amp


def shutdown(rt: Runtime) -> None:
    if rt.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, rt: Runtime, *, use_moe: bool) -> torch.nn.Module:
    """The model the loss runs: DDP-wrapped across ranks, the model itself in one process."""
    if rt.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
        # An MoE layer's unrouted experts get no gradient in a step; DDP must not wait for them.
        find_unused_parameters=use_moe,
    )


def all_sum(value: float, rt: Runtime) -> float:
    """`value` summed over all ranks (float64, so sums of many per-rank values stay exact enough)."""
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return float(t.item())


def all_gather(obj: Any, rt: Runtime) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if rt.world == 1:
        return [obj]
    gathered: list[Any] = [None] * rt.world
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()
