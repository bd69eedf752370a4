"""What rank 0 reports while a run trains: `metrics.jsonl` (one line per step), the log lines, the tqdm bar and,
when asked for and installed, wandb or swanlab. Every other rank reports nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.settings import TrainSettings, to_dict

log = logging.getLogger("training.loop")  # the name these lines have always had, for anyone filtering on it


class _Trackers:
    """Optional wandb / swanlab logging; never required."""

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


class RunLog:
    """The per-step record of one run; `active` is False on every rank but 0, where it does nothing."""

    def __init__(
        self, settings: TrainSettings, stage: str, out_dir: Path, *, total: int, step: int, active: bool
    ) -> None:
        self.settings, self.stage, self.total, self.active = settings, stage, total, active
        self.trackers = self.metrics = self.progress = None
        if not active:
            return
        self.trackers = _Trackers(settings, stage)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = (out_dir / "metrics.jsonl").open("a")
        if settings.progress:
            from tqdm import tqdm

            self.progress = tqdm(total=total, initial=step, desc=stage, dynamic_ncols=True)

    def start(self, **facts: Any) -> None:
        if self.active:
            log.info(
                "%(stage)s: %(records)d records, %(total)d steps x %(global_batch)d samples (batch %(batch)d x "
                "accum %(accum)d x world %(world)d), %(params).2fM params (%(trainable).2fM trainable), "
                "device %(device)s %(dtype)s",
                {"stage": self.stage, "total": self.total, **facts},
            )

    def step(self, record: dict[str, float], *, truncated: int, examples: int, bad_lines: int) -> None:
        """One optimizer step: `record` has step, loss, aux_loss, lr, units and ms."""
        if not self.active:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        step = int(record["step"])
        self.trackers.log(record, step)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        if step % self.settings.log_every == 0 or step == self.total:
            log.info(
                "%s step %d/%d loss %.4f aux %.4f lr %.3e %.0f ms/step truncated %d/%d bad lines %d",
                self.stage,
                step,
                self.total,
                record["loss"],
                record["aux_loss"],
                record["lr"],
                record["ms"],
                truncated,
                examples,
                bad_lines,
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.trackers is not None:
            self.trackers.close()
