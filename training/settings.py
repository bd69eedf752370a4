"""Typed, frozen training settings and the command line generated from them.

Every stage has one settings dataclass; a stage's defaults are the class's field defaults. The CLI is built from
the fields (name, type, default, `help` metadata), so adding a setting is one line, never an `add_argument`
call.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from assistant.errors import ConfigError

S = TypeVar("S")


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainSettings:
    """Settings shared by every training stage (the one loop reads only these)."""

    data: str = _f("", "training data, a jsonl file in the MiniMind format of this stage")
    out_dir: str = _f("out", "directory for checkpoints, the metrics log and the final .pth")
    tokenizer: str = _f(
        "", "directory with tokenizer.json (default: the MiniMind2 tokenizer beside the repo)"
    )
    init_from: str = _f(
        "", "start from these weights (.pth or HF dir); empty: a new model from the arch fields"
    )
    # Architecture of a new model (ignored when init_from is given: the checkpoint describes itself).
    hidden_size: int = _f(512, "new model: hidden size")
    num_hidden_layers: int = _f(8, "new model: transformer layers")
    num_attention_heads: int = _f(8, "new model: query heads")
    num_key_value_heads: int = _f(2, "new model: key/value heads (GQA)")
    vocab_size: int = _f(6400, "new model: vocabulary size (must match the tokenizer)")
    max_position_embeddings: int = _f(32768, "new model: RoPE table length")
    rope_theta: float = _f(1e6, "new model: RoPE base")
    dropout: float = _f(0.0, "new model: dropout probability")
    use_moe: bool = _f(False, "new model: mixture-of-experts feed-forward layers")
    n_routed_experts: int = _f(4, "new MoE model: routed experts")
    num_experts_per_tok: int = _f(2, "new MoE model: experts per token (top-k)")
    n_shared_experts: int = _f(1, "new MoE model: always-on shared experts")
    aux_loss_alpha: float = _f(0.1, "new MoE model: weight of the load-balancing loss")
    # Data.
    max_length: int = _f(512, "tokens per sequence; longer examples are truncated and counted")
    on_bad_line: str = _f(
        "error", "a malformed jsonl line: 'error' stops with file:line, 'skip' logs and skips it"
    )
    # Optimisation.
    batch_size: int = _f(32, "sequences per micro-batch per process")
    grad_accum: int = _f(8, "micro-batches per optimizer step")
    epochs: float = _f(1.0, "passes over the data (ignored when steps > 0)")
    steps: int = _f(0, "optimizer steps of the whole schedule; 0: derived from epochs")
    lr: float = _f(5e-4, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "cosine floor as a fraction of lr")
    warmup_steps: int = _f(0, "linear warmup steps")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: off)")
    # Runtime.
    device: str = _f("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'")
    dtype: str = _f("auto", "'auto' (bf16 autocast where supported, else fp32), 'bf16', 'fp16', 'fp32'")
    seed: int = _f(42, "seed for weights, data order and dropout")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")
    log_every: int = _f(10, "log loss every N steps")
    save_every: int = _f(500, "write a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _f(2, "resumable checkpoints to keep in out_dir")
    resume: bool = _f(True, "continue from the latest checkpoint in out_dir if there is one")
    stop_after: int = _f(
        0, "stop (resumably) after this many steps in this run, e.g. on a time-sliced machine"
    )
    time_limit_min: float = _f(0.0, "stop (resumably) after this many minutes of training in this run")
    progress: bool = _f(True, "show a tqdm progress bar on rank 0")
    wandb_project: str = _f("", "log to wandb (or swanlab) under this project when installed; empty: off")


@dataclass(frozen=True)
class PretrainSettings(TrainSettings):
    data: str = _f("dataset/pretrain_hq.jsonl", 'pretraining text, one {"text": ...} per line')
    lr: float = _f(5e-4, "peak learning rate")


@dataclass(frozen=True)
class SFTSettings(TrainSettings):
    data: str = _f("dataset/sft_mini_512.jsonl", 'chats, one {"conversations": [...]} per line')
    init_from: str = _f("out/pretrain/pretrain_512.pth", "weights to fine-tune")
    lr: float = _f(5e-5, "peak learning rate")
    batch_size: int = _f(16, "sequences per micro-batch per process")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    epochs: float = _f(2.0, "passes over the data (ignored when steps > 0)")


@dataclass(frozen=True)
class LoRASettings(SFTSettings):
    data: str = _f("dataset/lora_identity.jsonl", 'chats, one {"conversations": [...]} per line')
    init_from: str = _f("out/sft/full_sft_512.pth", "frozen base weights the adapter is trained on")
    lr: float = _f(1e-4, "peak learning rate")
    epochs: float = _f(10.0, "passes over the data (ignored when steps > 0)")
    lora_rank: int = _f(8, "rank r of each adapter")
    lora_alpha: float = _f(16.0, "adapter scale numerator: the update is (alpha / r) * B @ A")
    lora_targets: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Linear layer names that get an adapter",
    )


@dataclass(frozen=True)
class DPOSettings(SFTSettings):
    data: str = _f("dataset/dpo.jsonl", 'preference pairs, one {"chosen": [...], "rejected": [...]} per line')
    reference: str = _f("", "frozen reference weights (empty: the same weights as init_from)")
    beta: float = _f(0.1, "DPO temperature beta")
    lr: float = _f(1e-6, "peak learning rate")
    batch_size: int = _f(4, "preference pairs per micro-batch per process")
    max_length: int = _f(1024, "tokens per sequence; longer examples are truncated and counted")
    epochs: float = _f(1.0, "passes over the data (ignored when steps > 0)")


@dataclass(frozen=True)
class DistillSettings(SFTSettings):
    teacher: str = _f("", "teacher weights (.pth or HF dir); must share the tokenizer")
    temperature: float = _f(2.0, "softmax temperature of the soft labels")
    kl_weight: float = _f(0.5, "loss = kl_weight * T^2 * KL(teacher || student) + (1 - kl_weight) * CE")
    lr: float = _f(5e-6, "peak learning rate")
    epochs: float = _f(6.0, "passes over the data (ignored when steps > 0)")


@dataclass(frozen=True)
class ReasonSettings(SFTSettings):
    data: str = _f(
        "dataset/r1_mix_1024.jsonl", "chats whose answers use <think>...</think><answer>...</answer>"
    )
    init_from: str = _f("out/rlhf/rlhf_512.pth", "weights to fine-tune")
    tag_weight: float = _f(10.0, "loss weight of the tokens of the <think>/<answer> tags (others: 1)")
    max_length: int = _f(1024, "tokens per sequence; longer examples are truncated and counted")
    lr: float = _f(1e-6, "peak learning rate")
    epochs: float = _f(1.0, "passes over the data (ignored when steps > 0)")


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; anything else unchanged."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_arguments(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One `--field-name` option per dataclass field, typed and documented from the field."""
    hints = typing.get_type_hints(settings_cls)
    for f in dataclasses.fields(settings_cls):
        tp = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if tp is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(flag, dest=f.name, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=tp, default=None, help=help_text)


def from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """Settings from parsed flags; flags not given keep the class defaults."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(settings_cls)
        if getattr(args, f.name, None) is not None
    }
    for name, value in given.items():
        if isinstance(value, list):
            given[name] = tuple(value)
    return settings_cls(**given)


def from_dict(settings_cls: type[S], values: dict[str, Any], *, source: str = "settings") -> S:
    """Settings from a dict (e.g. a checkpoint's); unknown keys are an error, not silently dropped."""
    names = {f.name for f in dataclasses.fields(settings_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)} for {settings_cls.__name__}")
    return settings_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def parse(settings_cls: type[S], argv: list[str] | None, *, prog: str, description: str) -> S:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, settings_cls)
    return from_args(settings_cls, parser.parse_args(argv))


def to_dict(settings: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
