"""What a finished run leaves in out_dir for export: the final weights (the official MiniMind `.pth`, or a stage's
own file such as LoRA adapters), `config.json` and the tokenizer beside them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.data import DEFAULT_TOKENIZER, GENERATION_TOKENIZERS
from training.model import MiniMindConfig
from training.weights import save_pth

SaveFinal = Callable[[torch.nn.Module, Any, Path], Path]


def final_name(output: str, config: MiniMindConfig) -> str:
    """MiniMind's file name: full_sft_512.pth, pretrain_768_moe.pth, ..."""
    return f"{output}_{config.hidden_size}{'_moe' if config.use_moe else ''}.pth"


def write_final(
    model: torch.nn.Module,
    settings: Any,
    config: MiniMindConfig,
    path: Path,
    save: SaveFinal | None = None,
) -> Path:
    """Write the final weights to `path` (or where `save` puts them) with config.json and the tokenizer beside."""
    final = (save or _save_pth)(model, settings, path)
    # The architecture and tokenizer beside the weights: load_model reads config.json (nothing is inferred
    # from shapes) and assistant-export finds the tokenizer there.
    (path.parent / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    _copy_tokenizer(settings.tokenizer or str(GENERATION_TOKENIZERS[config.generation]), path.parent)
    return final


def _copy_tokenizer(given: str, out_dir: Path) -> None:
    src = Path(given) if given else DEFAULT_TOKENIZER
    src = src if src.is_dir() else src.parent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (src / name).is_file() and src.resolve() != out_dir.resolve():
            shutil.copyfile(src / name, out_dir / name)


def _save_pth(model: torch.nn.Module, settings: Any, path: Path) -> Path:
    save_pth(model, path)
    return path
