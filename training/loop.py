"""The one training loop. Every stage (training/stages.py) runs through `train`; a stage only contributes its
dataset encoder, its loss and, where needed, extra models (reference, teacher) or adapters. Works in one process
or under torchrun (training/runtime.py).

Loss normalisation: a stage's loss returns a *sum* over its units (target tokens, or preference pairs) and the
number of units; the loop divides by the units of the whole global batch (all micro-batches on all ranks). So
the gradient of a step is the same whatever the split into processes and accumulation steps, which is what
makes a 2-process run reproduce a 1-process run, and a resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from assistant.errors import ConfigError
from training import checkpoint, runtime
from training.build import build_model, build_optimizer, lr_at
from training.data import GENERATION_TOKENIZERS, Batch, Dataset, has_think_tokens, load_tokenizer, sample_indices
from training.losses import Context
from training.outputs import final_name, write_final
from training.runlog import RunLog
from training.runtime import Runtime
from training.settings import TrainSettings, to_dict

if TYPE_CHECKING:
    from training.stages import Stage

log = logging.getLogger(__name__)

BUDGET_STEP_CAP = 10**9  # the `total` of a run that the clock ends (budget_min) rather than a step count


@dataclass(frozen=True)
class TrainResult:
    final_path: Path | None  # None when the run stopped early (resumable)
    step: int
    total_steps: int
    losses: list[float]  # per optimizer step of this run
    out_dir: Path


@dataclass(frozen=True)
class _Run:
    """Everything one run's steps share."""

    settings: TrainSettings
    stage: Stage
    rt: Runtime
    dataset: Dataset
    model: torch.nn.Module  # the bare model: the optimizer's parameters, what checkpoints save
    ctx: Context  # ctx.model is the model the loss runs (DDP-wrapped across ranks)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    global_batch: int
    total: int


def train(settings: TrainSettings, stage: Stage) -> TrainResult:
    rt = runtime.setup_runtime(settings)
    try:
        return _train(settings, stage, rt, Path(settings.out_dir))
    finally:
        runtime.shutdown(rt)


def _train(settings: TrainSettings, stage: Stage, rt: Runtime, out_dir: Path) -> TrainResult:
    # The model first: its generation (new, or read from init_from) picks the default tokenizer.
    model, config = build_model(settings)
    tokenizer_path = settings.tokenizer or GENERATION_TOKENIZERS[config.generation]
    tokenizer = load_tokenizer(tokenizer_path)
    dataset = Dataset(
        settings.data,
        stage.encoder(settings),
        tokenizer,
        max_length=settings.max_length,
        on_bad_line=settings.on_bad_line,
    )
    if has_think_tokens(tokenizer) != (config.generation == "minimind3"):
        raise ConfigError(
            f"the tokenizer {tokenizer_path} is not the {config.label} "
            f"tokenizer (its <think>/</think> special tokens tell them apart): give --tokenizer "
            f"{GENERATION_TOKENIZERS[config.generation]}"
        )
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ConfigError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens but the model only "
            f"{config.vocab_size}: use the tokenizer the model was trained with"
        )
    extras = stage.prepare(model, settings, rt.device) if stage.prepare else {}
    model.to(rt.device)
    optimizer = build_optimizer(model, settings)

    global_batch = settings.batch_size * settings.grad_accum * rt.world
    total = settings.steps or max(1, math.ceil(settings.epochs * len(dataset) / global_batch))
    if settings.budget_min and not settings.steps:
        total = BUDGET_STEP_CAP  # the clock ends the run
    step, cursor = 0, 0
    resumed = None
    if settings.resume:
        resumed = checkpoint.resume(
            out_dir,
            stage=stage.name,
            model=model,
            optimizer=optimizer,
            model_config=config.to_dict(),
            rank=rt.rank,
        )
    if resumed:
        step, cursor = resumed.step, resumed.cursor
        total = resumed.total_steps if not settings.steps else total
        log.info("resumed from %s at step %d/%d (sample %d)", resumed.path, step, total, cursor)
    else:
        torch.manual_seed(settings.seed + rt.rank)

    run = _Run(
        settings,
        stage,
        rt,
        dataset,
        model,
        Context(runtime.wrap(model, rt, use_moe=config.use_moe), settings, extras),
        optimizer,
        torch.amp.GradScaler(enabled=rt.amp_dtype == torch.float16),
        global_batch,
        total,
    )

    def save_state(at_step: int, at_cursor: int) -> None:
        rngs = runtime.all_gather(checkpoint.rng_state(), rt)
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

    record = RunLog(settings, stage.name, out_dir, total=total, step=step, active=rt.main)
    record.start(
        records=len(dataset),
        global_batch=global_batch,
        batch=settings.batch_size,
        accum=settings.grad_accum,
        world=rt.world,
        params=sum(p.numel() for p in model.parameters()) / 1e6,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        device=rt.device,
        dtype=rt.amp_dtype or "fp32",
    )
    losses: list[float] = []
    truncated = examples = 0  # over this run's steps, for the log line
    started = time.monotonic()
    run_steps = 0
    budget_s = settings.budget_min * 60
    model.train()
    try:
        while step < total:
            progress = (time.monotonic() - started) / budget_s if budget_s else None
            metrics, batches = _step(run, step, cursor, progress)
            truncated += sum(b.truncated for b in batches)
            examples += sum(b.examples for b in batches)
            step += 1
            run_steps += 1
            cursor += global_batch
            losses.append(metrics["loss"])
            record.step(
                {"step": step, **metrics},
                truncated=truncated,
                examples=examples,
                bad_lines=dataset.file.bad_lines,
            )
            stop = (settings.stop_after and run_steps >= settings.stop_after) or (
                settings.time_limit_min and time.monotonic() - started > settings.time_limit_min * 60
            )
            if step < total and ((settings.save_every and step % settings.save_every == 0) or stop):
                save_state(step, cursor)
            if stop and step < total:
                log.info("%s: stopping at step %d/%d as asked; run again to resume", stage.name, step, total)
                return TrainResult(None, step, total, losses, out_dir)
            # Every rank ends on the same step: the slowest clock decides.
            if budget_s and runtime.all_sum(float(time.monotonic() - started >= budget_s), rt) > 0:
                log.info("%s: time budget of %.1f min spent at step %d", stage.name, settings.budget_min, step)
                total = step
    except KeyboardInterrupt:
        if rt.world == 1 and step > 0:
            save_state(step, cursor)
        raise
    finally:
        record.close()

    final = out_dir / final_name(stage.output, config)
    if rt.main:
        model.eval()
        final = write_final(model, settings, config, final, stage.save_final)
        last = losses[-1] if losses else float("nan")
        log.info("%s done: %d steps, final loss %.4f, wrote %s", stage.name, step, last, final)
    runtime.barrier(rt)
    return TrainResult(final, step, total, losses, out_dir)


def _micro_batches(run: _Run, cursor: int) -> list[Batch]:
    """This rank's share of the global batch starting at sample `cursor`, as grad_accum micro-batches."""
    s, rt = run.settings, run.rt
    indices = sample_indices(len(run.dataset), cursor, run.global_batch, seed=s.seed)
    micro: list[Batch] = []
    for m in range(s.grad_accum):
        first = (m * rt.world + rt.rank) * s.batch_size
        items = run.dataset.items(indices[first : first + s.batch_size])
        if items:
            micro.append(run.stage.collate(items))
    return micro


def _step(run: _Run, step: int, cursor: int, progress: float | None) -> tuple[dict[str, Any], list[Batch]]:
    """One optimizer step; returns its metrics.jsonl record (without the step number) and this rank's batches.

    `progress`: the fraction of a time budget spent (None: the schedule follows the step count)."""
    t0 = time.monotonic()
    s, rt, stage, model = run.settings, run.rt, run.stage, run.model
    lr = lr_at(
        step, total=run.total, warmup=s.warmup_steps, peak=s.lr, min_ratio=s.min_lr_ratio, progress=progress
    )
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    micro = _micro_batches(run, cursor)
    global_units = runtime.all_sum(sum(stage.units(b) for b in micro), rt)
    if global_units <= 0:
        raise ConfigError(
            f"{s.data}: a whole batch at step {step} has nothing to learn (no valid records or no target tokens)"
        )
    loss_sum = 0.0
    aux_sum = 0.0
    for i, batch in enumerate(micro):
        batch = batch.to(rt.device)
        last = i == len(micro) - 1
        # Gradients are all-reduced once per step, on the last micro-batch.
        sync = contextlib.nullcontext() if last or rt.world == 1 else run.ctx.model.no_sync()
        with sync:
            with rt.autocast():
                parts = stage.loss(run.ctx, batch)
            # DDP averages gradients over ranks, hence the factor world.
            objective = parts.total * (rt.world / global_units) + parts.aux.to(parts.total) / len(micro)
            run.scaler.scale(objective).backward()
        loss_sum += float(parts.total.detach())
        aux_sum += float(parts.aux.detach()) / len(micro)
    if not micro and rt.world > 1:
        # This rank had only skipped lines; it must still join the gradient all-reduce.
        objective = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        objective.backward()
    if s.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], s.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    record = {
        "loss": runtime.all_sum(loss_sum, rt) / global_units,
        "aux_loss": runtime.all_sum(aux_sum, rt) / rt.world,
        "lr": lr,
        "units": global_units,
        "ms": (time.monotonic() - t0) * 1000,
    }
    return record, micro
