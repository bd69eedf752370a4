"""Resumable training checkpoints: self-describing, written atomically, loaded strictly.

A checkpoint holds everything a run needs to continue as if it had never stopped: model and optimizer state,
the step, the data cursor (global samples consumed), every RNG state, the model config and the settings.
Final weights for export are written separately by `training.weights.save_pth` in the official format.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.errors import AssistantError, ConfigError

log = logging.getLogger(__name__)

FORMAT = "edge-assistant-train-state"
VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Resumable checkpoints in out_dir, oldest first."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def save(out_dir: str | os.PathLike[str], *, step: int, keep: int, **state: Any) -> Path:
    path = Path(out_dir) / f"step_{step:08d}.pt"
    atomic_torch_save({"format": FORMAT, "version": VERSION, "step": step, **state}, path)
    for old in checkpoints(out_dir)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def load_tagged(
    path: str | os.PathLike[str],
    *,
    fmt: str,
    version: int,
    kind: str,
    error: type[AssistantError],
    weights_only: bool,
    hint: str = "",
) -> dict[str, Any]:
    """A torch file holding a dict tagged {"format": fmt, "version": version}; anything else is `error`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise error(f"cannot read {kind} {path}: {exc}{hint}") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise error(f"{path} is not a {kind} of this project (format {fmt!r})")
    if state.get("version") != version:
        raise error(f"{path}: {kind} version {state.get('version')} is not supported (want {version})")
    return state


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    # Not weights_only: the state holds the RNG states of python and numpy, which are not plain tensors.
    return load_tagged(
        path,
        fmt=FORMAT,
        version=VERSION,
        kind="training checkpoint",
        error=ConfigError,
        weights_only=False,
        hint=" (delete it to start over)",
    )


@dataclass(frozen=True)
class Resumed:
    path: Path
    step: int
    cursor: int  # global samples consumed
    total_steps: int


def resume(
    out_dir: Path,
    *,
    stage: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: dict[str, Any],
    rank: int,
) -> Resumed | None:
    """Load the latest checkpoint in out_dir into model, optimizer and the RNGs; None when there is none.

    Refused (ConfigError naming the differences) when it is another stage's or another model's.
    """
    saved = checkpoints(out_dir)
    if not saved:
        return None
    path = saved[-1]
    state = load(path)
    check_same("stage", path, {"stage": state["stage"]}, {"stage": stage})
    check_same("model config", path, state["model_config"], model_config)
    try:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot resume from {path}: its trainable state does not fit this run "
            f"({str(exc).splitlines()[0]}). Use --no-resume or another --out-dir."
        ) from exc
    # A run resumed on fewer ranks than it was saved from continues the last saved RNG stream.
    set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)])
    return Resumed(path, int(state["step"]), int(state["cursor"]), int(state["total_steps"]))


def check_same(kind: str, path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when the saved and the current configuration differ; name every difference."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume from {path}: its {kind} differs ({'; '.join(diffs)}). "
            "Use the original settings, another --out-dir, or --no-resume to start over."
        )
