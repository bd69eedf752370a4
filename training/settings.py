"""Typed, frozen training settings and the command line generated from them.

Every stage has one settings dataclass; a stage's defaults are the class's field defaults. The CLI is built from
the fields (name, type, default, `help` metadata), so adding a setting is one line, never an `add_argument`
call. A stage class states only what it changes: `stage_defaults` gives inherited fields new defaults and keeps
their type and help, so no field is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from assistant.errors import ConfigError

S = TypeVar("S")
T = TypeVar("T", bound=type)


def setting(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A settings field: its default and the `--help` text of its flag."""
    return field(default=default, metadata={"help": help})


def stage_defaults(**defaults: Any) -> Callable[[T], T]:
    """Class decorator making a frozen settings dataclass whose inherited fields take new defaults.

    A value is the new default (the inherited help stays) or a `setting(...)` (new default and new help).
    Redeclared fields keep their place in the base's field order, so `--help` lists flags in the same order.
    """

    def make(cls: T) -> T:
        inherited = {f.name: f for f in dataclasses.fields(cls)}
        hints = {k: v for base in reversed(cls.__mro__) for k, v in vars(base).get("__annotations__", {}).items()}
        own = dict(vars(cls).get("__annotations__", {}))
        for name, value in defaults.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: no inherited setting {name!r} to give a default")
            if not isinstance(value, dataclasses.Field):
                value = field(default=value, metadata=inherited[name].metadata)
            own[name] = hints[name]
            setattr(cls, name, value)
        cls.__annotations__ = own
        return dataclass(frozen=True)(cls)

    return make


@dataclass(frozen=True)
class TrainSettings:
    """Settings shared by every training stage (the one loop reads only these)."""

    data: str = setting("", "training data, a jsonl file in the MiniMind format of this stage")
    out_dir: str = setting("out", "directory for checkpoints, the metrics log and the final .pth")
    tokenizer: str = setting(
        "", "directory with tokenizer.json (default: the MiniMind2 tokenizer beside the repo)"
    )
    init_from: str = setting(
        "", "start from these weights (.pth or HF dir); empty: a new model from the arch fields"
    )
    # Architecture of a new model (ignored when init_from is given: the checkpoint describes itself).
    generation: str = setting(
        "minimind2",
        "new model: 'minimind2' or 'minimind3' (q/k RMSNorm, eps 1e-6, FFN ceil(H*pi/64)*64, MoE top-1 without "
        "shared experts, and the minimind-3 tokenizer when --tokenizer is not given); the size flags still apply",
    )
    hidden_size: int = setting(512, "new model: hidden size")
    num_hidden_layers: int = setting(8, "new model: transformer layers")
    num_attention_heads: int = setting(8, "new model: query heads")
    num_key_value_heads: int = setting(2, "new model: key/value heads (GQA)")
    vocab_size: int = setting(6400, "new model: vocabulary size (must match the tokenizer)")
    max_position_embeddings: int = setting(32768, "new model: RoPE table length")
    rope_theta: float = setting(1e6, "new model: RoPE base")
    dropout: float = setting(0.0, "new model: dropout probability")
    use_moe: bool = setting(False, "new model: mixture-of-experts feed-forward layers")
    n_routed_experts: int = setting(4, "new MoE model: routed experts")
    num_experts_per_tok: int = setting(2, "new MoE model: experts per token (top-k)")
    n_shared_experts: int = setting(1, "new MoE model: always-on shared experts")
    aux_loss_alpha: float = setting(0.1, "new MoE model: weight of the load-balancing loss")
    # Data.
    max_length: int = setting(512, "tokens per sequence; longer examples are truncated and counted")
    on_bad_line: str = setting(
        "error", "a malformed jsonl line: 'error' stops with file:line, 'skip' logs and skips it"
    )
    # Optimisation.
    batch_size: int = setting(32, "sequences per micro-batch per process")
    grad_accum: int = setting(8, "micro-batches per optimizer step")
    epochs: float = setting(1.0, "passes over the data (ignored when steps > 0)")
    steps: int = setting(0, "optimizer steps of the whole schedule; 0: derived from epochs")
    lr: float = setting(5e-4, "peak learning rate")
    min_lr_ratio: float = setting(0.1, "cosine floor as a fraction of lr")
    warmup_steps: int = setting(0, "linear warmup steps")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the global gradient norm to this (0: off)")
    # Runtime.
    device: str = setting("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'")
    dtype: str = setting("auto", "'auto' (bf16 autocast where supported, else fp32), 'bf16', 'fp16', 'fp32'")
    seed: int = setting(42, "seed for weights, data order and dropout")
    threads: int = setting(0, "torch CPU threads (0: torch's default)")
    log_every: int = setting(10, "log loss every N steps")
    save_every: int = setting(500, "write a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = setting(2, "resumable checkpoints to keep in out_dir")
    resume: bool = setting(True, "continue from the latest checkpoint in out_dir if there is one")
    stop_after: int = setting(
        0, "stop (resumably) after this many steps in this run, e.g. on a time-sliced machine"
    )
    time_limit_min: float = setting(0.0, "stop (resumably) after this many minutes of training in this run")
    budget_min: float = setting(
        0.0,
        "train for this many minutes by the clock: the learning-rate schedule follows the elapsed time and the "
        "run ends (and writes its final weights) when the budget is spent; steps, if set, is an upper bound",
    )
    progress: bool = setting(True, "show a tqdm progress bar on rank 0")
    wandb_project: str = setting("", "log to wandb (or swanlab) under this project when installed; empty: off")


CHATS = 'chats, one {"conversations": [...]} per line'


@stage_defaults(data=setting("dataset/pretrain_hq.jsonl", 'pretraining text, one {"text": ...} per line'))
class PretrainSettings(TrainSettings):
    """Pretraining: the shared settings as they are."""


@stage_defaults(
    lr=5e-5, batch_size=16, grad_accum=1, epochs=2.0,
    data=setting("dataset/sft_mini_512.jsonl", CHATS),
    init_from=setting("out/pretrain/pretrain_512.pth", "weights to fine-tune"),
)
class SFTSettings(TrainSettings):
    """Full fine-tuning: from pretrained weights, at a lower rate, in smaller batches."""


@stage_defaults(
    lr=1e-4, epochs=10.0,
    data=setting("dataset/lora_identity.jsonl", CHATS),
    init_from=setting("out/sft/full_sft_512.pth", "frozen base weights the adapter is trained on"),
)
class LoRASettings(SFTSettings):
    lora_rank: int = setting(8, "rank r of each adapter")
    lora_alpha: float = setting(16.0, "adapter scale numerator: the update is (alpha / r) * B @ A")
    lora_targets: tuple[str, ...] = setting(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Linear layer names that get an adapter",
    )


@stage_defaults(
    lr=1e-6, max_length=1024, epochs=1.0,
    batch_size=setting(4, "preference pairs per micro-batch per process"),
    data=setting("dataset/dpo.jsonl", 'preference pairs, one {"chosen": [...], "rejected": [...]} per line'),
)
class DPOSettings(SFTSettings):
    reference: str = setting("", "frozen reference weights (empty: the same weights as init_from)")
    beta: float = setting(0.1, "DPO temperature beta")


@stage_defaults(lr=5e-6, epochs=6.0)
class DistillSettings(SFTSettings):
    teacher: str = setting("", "teacher weights (.pth or HF dir); must share the tokenizer")
    temperature: float = setting(2.0, "softmax temperature of the soft labels")
    kl_weight: float = setting(0.5, "loss = kl_weight * T^2 * KL(teacher || student) + (1 - kl_weight) * CE")


@stage_defaults(
    lr=1e-6, max_length=1024, epochs=1.0,
    data=setting("dataset/r1_mix_1024.jsonl", "chats whose answers use <think>...</think><answer>...</answer>"),
    init_from=setting("out/rlhf/rlhf_512.pth", "weights to fine-tune"),
)
class ReasonSettings(SFTSettings):
    tag_weight: float = setting(10.0, "loss weight of the tokens of the <think>/<answer> tags (others: 1)")


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
