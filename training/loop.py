"""The one training loop. Every stage (pretrain, SFT, LoRA, DPO, distillation, reasoning) runs through `train`;
a stage only contributes its dataset encoder, its loss and, where needed, extra models (reference, teacher) or
adapters. Works in one process or under torchrun (DDP: NCCL on GPU, gloo on CPU).

Loss normalisation: a stage's loss returns a *sum* over its units (target tokens, or preference pairs) and the
number of units; the loop divides by the units of the whole global batch (all micro-batches on all ranks). So
the gradient of a step is the same whatever the split into processes and accumulation steps, which is what
makes a 2-process run reproduce a 1-process run, and a resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from assistant.errors import AssistantError, ConfigError
from training import checkpoint
from training.data import (
    DEFAULT_TOKENIZER,
    IGNORE,
    Batch,
    Dataset,
    Encoded,
    collate,
    load_tokenizer,
    sample_indices,
)
from training.settings import TrainSettings, to_dict

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- stage interfa


@dataclass
class Context:
    """What a stage's loss sees: the (possibly DDP-wrapped) model and the stage's extra models."""

    model: torch.nn.Module
    settings: Any
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossParts:
    total: torch.Tensor  # sum of the stage loss over `units`
    aux: torch.Tensor  # MoE load-balancing loss of this forward (already scaled by aux_loss_alpha)
    metrics: dict[str, float] = field(default_factory=dict)  # sums over units, averaged by the loop


@dataclass(frozen=True)
class Stage:
    name: str  # what the logs and checkpoints call it
    output: str  # stem of the final .pth, as MiniMind names it (pretrain, full_sft, ...)
    settings_cls: type
    encoder: Callable[[Any], Callable[[dict[str, Any], Any, int], Encoded]]  # settings -> record encoder
    loss: Callable[[Context, Batch], LossParts]
    units: Callable[[Batch], float] = lambda batch: batch.tokens
    collate: Callable[[list[Encoded]], Batch] = collate
    prepare: Callable[[torch.nn.Module, Any, torch.device], dict[str, Any]] | None = None
    save_final: Callable[[torch.nn.Module, Any, Path], Path] | None = None
    description: str = ""


@dataclass
class TrainResult:
    final_path: Path | None  # None when the run stopped early (resumable)
    step: int
    total_steps: int
    losses: list[float]  # per optimizer step of this run
    out_dir: Path


# ---------------------------------------------------------------------------------------------- losses


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) at each position, 0 where the label is IGNORE. logits [B,T,V], labels [B,T] -> [B,T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    safe = labels.clamp(min=0)
    out = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(labels == IGNORE, 0.0)


def lm_loss(ctx: Context, batch: Batch) -> LossParts:
    """Weighted next-token cross-entropy summed over target tokens (pretrain, SFT, LoRA, reasoning)."""
    out = ctx.model(batch.input_ids)
    nll = -token_logprobs(out.logits, batch.labels)  # [B, T]
    return LossParts(total=(nll * batch.weights).sum(), aux=_aux(out))


def _aux(out: Any) -> torch.Tensor:
    aux = getattr(out, "aux_loss", None)
    if aux is None:
        return torch.zeros(())
    return aux if isinstance(aux, torch.Tensor) else torch.tensor(float(aux))


# ---------------------------------------------------------------------------------------------- runtime setup


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
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if settings.dtype == "auto":
        amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    elif settings.dtype in dtypes:
        amp = dtypes[settings.dtype]
        if amp is not None and device.type == "cpu":
            raise ConfigError(
                f"--dtype {settings.dtype} is for GPUs; on CPU training runs in fp32 (--dtype fp32)"
            )
    else:
        raise ConfigError(f"--dtype must be auto, bf16, fp16 or fp32, not {settings.dtype!r}")
    return Runtime(rank, world, local_rank, device, amp)


def lr_at(step: int, *, total: int, warmup: int, peak: float, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine down to min_ratio * peak."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_model(settings: TrainSettings) -> tuple[torch.nn.Module, Any]:
    """The model to train: loaded from init_from, or new from the architecture settings (seeded)."""
    from training.model import MiniMindConfig, MiniMindForCausalLM

    if settings.init_from:
        from training.weights import load_model

        if not Path(settings.init_from).exists():
            raise ConfigError(
                f"--init-from {settings.init_from}: no such file or directory "
                "(train the previous stage first, or give the path of its .pth)"
            )
        model, config = load_model(settings.init_from)
        return model.float(), config
    config = MiniMindConfig(
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        vocab_size=settings.vocab_size,
        max_position_embeddings=settings.max_position_embeddings,
        rope_theta=settings.rope_theta,
        dropout=settings.dropout,
        use_moe=settings.use_moe,
        n_routed_experts=settings.n_routed_experts,
        num_experts_per_tok=settings.num_experts_per_tok,
        n_shared_experts=settings.n_shared_experts,
        aux_loss_alpha=settings.aux_loss_alpha,
    )
    torch.manual_seed(settings.seed)
    return MiniMindForCausalLM(config), config


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("nothing to train: every parameter is frozen")
    # Norm weights and other vectors are not decayed (decay would pull RMSNorm gains toward 0).
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2))


class _Trackers:
    """Optional wandb / swanlab logging on rank 0; never required."""

    def __init__(self, settings: TrainSettings, stage: str) -> None:
        self.run = None
        if not settings.wandb_project:
            return
        for name in ("wandb", "swanlab"):
            try:
                module = __import__(name)
            except ImportError:
                continue
            self.run = module.init(project=settings.wandb_project, name=stage, config=to_dict(settings))
            self.module = module
            log.info("logging to %s project %s", name, settings.wandb_project)
            return
        log.warning("--wandb-project given but neither wandb nor swanlab is installed: not logging there")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.module.log(metrics, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


# ---------------------------------------------------------------------------------------------- the loop


def _all_sum(value: float, rt: Runtime) -> float:
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return float(t.item())


def train(settings: TrainSettings, stage: Stage) -> TrainResult:
    rt = setup_runtime(settings)
    out_dir = Path(settings.out_dir)
    try:
        return _train(settings, stage, rt, out_dir)
    finally:
        if rt.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(settings: TrainSettings, stage: Stage, rt: Runtime, out_dir: Path) -> TrainResult:
    tokenizer = load_tokenizer(settings.tokenizer)
    dataset = Dataset(
        settings.data,
        stage.encoder(settings),
        tokenizer,
        max_length=settings.max_length,
        on_bad_line=settings.on_bad_line,
    )
    model, config = build_model(settings)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ConfigError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
            f"{config.vocab_size}: use the tokenizer the model was trained with"
        )
    extras = stage.prepare(model, settings, rt.device) if stage.prepare else {}
    model.to(rt.device)
    optimizer = _optimizer(model, settings)

    global_batch = settings.batch_size * settings.grad_accum * rt.world
    total = settings.steps or max(1, math.ceil(settings.epochs * len(dataset) / global_batch))
    step, cursor = 0, 0

    saved = checkpoint.checkpoints(out_dir) if settings.resume else []
    if saved:
        state = checkpoint.load(saved[-1])
        checkpoint.check_same("stage", saved[-1], {"stage": state["stage"]}, {"stage": stage.name})
        checkpoint.check_same("model config", saved[-1], state["model_config"], config.to_dict())
        try:
            model.load_state_dict(state["model"], strict=True)
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"cannot resume from {saved[-1]}: its trainable state does not fit this run "
                f"({str(exc).splitlines()[0]}). Use --no-resume or another --out-dir."
            ) from exc
        step, cursor = int(state["step"]), int(state["cursor"])
        total = int(state["total_steps"]) if not settings.steps else total
        checkpoint.set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
        log.info("resumed from %s at step %d/%d (sample %d)", saved[-1], step, total, cursor)
    else:
        torch.manual_seed(settings.seed + rt.rank)

    train_model: torch.nn.Module = model
    if rt.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(config, "use_moe", False)),
        )
    ctx = Context(train_model, settings, extras)
    scaler = torch.amp.GradScaler(enabled=rt.amp_dtype == torch.float16)
    trackers = _Trackers(settings, stage.name) if rt.main else None
    if rt.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = (out_dir / "metrics.jsonl").open("a") if rt.main else None
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if rt.main:
        log.info(
            "%s: %d records, %d steps x %d samples (batch %d x accum %d x world %d), "
            "%.2fM params (%.2fM trainable), device %s %s",
            stage.name,
            len(dataset),
            total,
            global_batch,
            settings.batch_size,
            settings.grad_accum,
            rt.world,
            n_params / 1e6,
            n_train / 1e6,
            rt.device,
            rt.amp_dtype or "fp32",
        )

    def save_state(at_step: int, at_cursor: int) -> None:
        rngs = [checkpoint.rng_state()]
        if rt.world > 1:
            gathered: list[Any] = [None] * rt.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if rt.main:
            path = checkpoint.save(
                out_dir,
                step=at_step,
                keep=settings.keep_checkpoints,
                stage=stage.name,
                cursor=at_cursor,
                total_steps=total,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                rng=rngs,
                world_size=rt.world,
                model_config=config.to_dict(),
                settings=to_dict(settings),
            )
            log.info("saved %s", path)

    losses: list[float] = []
    truncated_total = 0
    examples_total = 0
    started = time.monotonic()
    progress = None
    if rt.main and settings.progress:
        from tqdm import tqdm

        progress = tqdm(total=total, initial=step, desc=stage.name, dynamic_ncols=True)
    run_steps = 0
    model.train()
    try:
        while step < total:
            t0 = time.monotonic()
            lr = lr_at(
                step,
                total=total,
                warmup=settings.warmup_steps,
                peak=settings.lr,
                min_ratio=settings.min_lr_ratio,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            indices = sample_indices(len(dataset), cursor, global_batch, seed=settings.seed)
            micro: list[Batch] = []
            for m in range(settings.grad_accum):
                first = (m * rt.world + rt.rank) * settings.batch_size
                items = dataset.items(indices[first : first + settings.batch_size])
                if items:
                    micro.append(stage.collate(items))
            local_units = sum(stage.units(b) for b in micro)
            global_units = _all_sum(local_units, rt)
            if global_units <= 0:
                raise ConfigError(
                    f"{settings.data}: a whole batch at step {step} has nothing to learn "
                    "(no valid records or no target tokens)"
                )
            loss_sum = 0.0
            aux_sum = 0.0
            for i, batch in enumerate(micro):
                batch = batch.to(rt.device)
                last = i == len(micro) - 1
                sync = contextlib.nullcontext() if last or rt.world == 1 else train_model.no_sync()
                with sync:
                    with rt.autocast():
                        parts = stage.loss(ctx, batch)
                    # DDP averages gradients over ranks, hence the factor world.
                    objective = parts.total * (rt.world / global_units) + parts.aux.to(parts.total) / len(
                        micro
                    )
                    scaler.scale(objective).backward()
                loss_sum += float(parts.total.detach())
                aux_sum += float(parts.aux.detach()) / len(micro)
                truncated_total += batch.truncated
                examples_total += batch.examples
            if not micro and rt.world > 1:
                # This rank had only skipped lines; it must still join the gradient all-reduce.
                objective = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
                objective.backward()
            if settings.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], settings.grad_clip
                )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            run_steps += 1
            cursor += global_batch
            loss = _all_sum(loss_sum, rt) / global_units
            aux = _all_sum(aux_sum, rt) / rt.world
            losses.append(loss)
            ms = (time.monotonic() - t0) * 1000
            if rt.main:
                record = {
                    "step": step,
                    "loss": loss,
                    "aux_loss": aux,
                    "lr": lr,
                    "units": global_units,
                    "ms": ms,
                }
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                trackers.log(record, step)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if step % settings.log_every == 0 or step == total:
                    log.info(
                        "%s step %d/%d loss %.4f aux %.4f lr %.3e %.0f ms/step truncated %d/%d bad lines %d",
                        stage.name,
                        step,
                        total,
                        loss,
                        aux,
                        lr,
                        ms,
                        truncated_total,
                        examples_total,
                        dataset.file.bad_lines,
                    )
            stop = (settings.stop_after and run_steps >= settings.stop_after) or (
                settings.time_limit_min and time.monotonic() - started > settings.time_limit_min * 60
            )
            if step < total and ((settings.save_every and step % settings.save_every == 0) or stop):
                save_state(step, cursor)
            if stop and step < total:
                log.info("%s: stopping at step %d/%d as asked; run again to resume", stage.name, step, total)
                return TrainResult(None, step, total, losses, out_dir)
    except KeyboardInterrupt:
        if rt.world == 1 and step > 0:
            save_state(step, cursor)
        raise
    finally:
        if progress is not None:
            progress.close()
        if metrics_file is not None:
            metrics_file.close()
        if trackers is not None:
            trackers.close()

    final = out_dir / f"{stage.output}_{config.hidden_size}{'_moe' if config.use_moe else ''}.pth"
    if rt.main:
        model.eval()
        save = stage.save_final or _save_pth
        final = save(model, settings, final)
        # The architecture and tokenizer beside the weights: load_model reads config.json (nothing is inferred
        # from shapes) and assistant-export finds the tokenizer there.
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        _copy_tokenizer(settings.tokenizer, out_dir)
        log.info(
            "%s done: %d steps, final loss %.4f, wrote %s",
            stage.name,
            step,
            losses[-1] if losses else float("nan"),
            final,
        )
    if rt.world > 1:
        dist.barrier()
    return TrainResult(final, step, total, losses, out_dir)


def _copy_tokenizer(given: str, out_dir: Path) -> None:
    src = Path(given) if given else DEFAULT_TOKENIZER
    src = src if src.is_dir() else src.parent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (src / name).is_file() and src.resolve() != out_dir.resolve():
            shutil.copyfile(src / name, out_dir / name)


def _save_pth(model: torch.nn.Module, settings: Any, path: Path) -> Path:
    from training.weights import save_pth

    save_pth(model, path)
    return path


# ---------------------------------------------------------------------------------------------- entry point


def run_cli(stage: Stage, argv: list[str] | None = None) -> int:
    """`python -m training.<stage>`: parse the settings, train, report user errors in one line."""
    import sys

    from training.settings import parse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse(
        stage.settings_cls, argv, prog=f"python -m training.{stage.name}", description=stage.description
    )
    try:
        train(settings, stage)
    except AssistantError as exc:
        print(f"training.{stage.name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
