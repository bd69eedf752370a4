"""Load and save MiniMind2 and minimind-3 weights in the two published forms, strictly.

The generation is detected from the keys (every layer has `self_attn.q_norm` / `k_norm`: minimind-3) or from a
`config.json` (minimind-3's official key names, or "generation"), logged, and cross-checked: a config of one
generation with the weights of the other, or keys that fit neither, is a ModelError naming the file and those
keys.

Forms read by `load_model`:
- a native `.pth` state dict (what the official training scripts save: fp16 or fp32 tensors, HF-Llama names,
  the tied `lm_head.weight` stored as its own entry), optionally with a `config.json` beside it;
- a transformers-format directory: `config.json` plus `model.safetensors` or `pytorch_model.bin`.

Without a config the architecture is inferred from tensor shapes. Shapes give hidden size, layers, vocab, FFN
width, expert counts and the q/k/v widths, but not how those widths split into heads: the inference assumes
head_dim 64 (what every MiniMind2 release uses), so heads = width / 64. A model with another head size needs
a `config.json` or an explicit `config=`. minimind-3 needs no such guess: its q_norm has head_dim entries.
`num_experts_per_tok` cannot be seen in shapes either: it defaults to the official 2 (MiniMind2) or 1
(minimind-3).

Every problem is a ModelError naming the file and the key: a wrong key is never skipped, and a shape
mismatch is never loaded silently.

Why ~350 lines: both generations' key layouts, each checked strictly.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from assistant.errors import ModelError
from training.model import MiniMindConfig, MiniMindForCausalLM, minimind3_config

log = logging.getLogger(__name__)

ASSUMED_HEAD_DIM = 64
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
_LEGACY_MARKERS = ("tok_embeddings.weight", "layers.0.attention.wq.weight", "output.weight")
# Wrappers that prefix every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def load_model(
    path: str | Path,
    *,
    config: MiniMindConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[MiniMindForCausalLM, MiniMindConfig]:
    """Load a `.pth` file or a transformers-format directory into an eval-mode model of `dtype`."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model checkpoint not found: {path}")
    if path.is_dir():
        state, weights_file, dir_config = _read_hf_dir(path)
    else:
        weights_file = path
        state = read_state_dict(path)
        beside = path.parent / "config.json"
        dir_config = read_config(beside) if config is None and beside.is_file() else None
    state = _strip_wrappers(state)
    _refuse_legacy(state, weights_file)
    found = detect_generation(state, source=weights_file)
    told_by = "the given config" if config else "config.json" if dir_config else "the keys"
    config = config or dir_config or infer_config(state, source=weights_file)
    if config.generation != found:
        raise ModelError(
            f"{weights_file}: the config says {config.label} but the keys are {_label(found)}'s "
            f"({_generation_evidence(state)}); use the config.json that came with these weights"
        )
    model = MiniMindForCausalLM(config)
    _load_strict(model, state, weights_file, config)
    model.to(dtype)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "loaded %s: generation %s (from %s), %.2fM parameters, %d layers, hidden %d, moe=%s",
        weights_file,
        config.label,
        told_by,
        n_params / 1e6,
        config.num_hidden_layers,
        config.hidden_size,
        config.use_moe,
    )
    return model, config


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth`/`.bin`/`.safetensors` file; unreadable files are ModelError naming the file."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ModelError(
                f"reading {path} needs the safetensors package: pip install safetensors"
            ) from exc
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error type for every kind of damage
            raise ModelError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot read {path}: not a readable torch checkpoint ({exc})") from exc
    # Training checkpoints that wrap the weights ({"model": state_dict, ...}) are accepted too.
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def detect_generation(state: dict[str, torch.Tensor], *, source: Path | str = "checkpoint") -> str:
    """"minimind3" when every layer has q_norm and k_norm, "minimind2" for the other HF-Llama-named MiniMind
    checkpoints; keys of no known generation are a ModelError naming the file and the keys that did not fit."""
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))})
    if "model.embed_tokens.weight" not in state or not layers:
        misfits = [k for k in state if not k.startswith(("model.", "lm_head."))] or sorted(state)
        raise ModelError(
            f"{source}: not a checkpoint of a known MiniMind generation (MiniMind2 or minimind-3): "
            f"no model.embed_tokens.weight / model.layers.N.* keys; keys that did not fit: "
            f"{', '.join(misfits[:5])}" + _more_count(len(misfits) - 5)
        )
    normed = [
        i for i in layers
        if f"model.layers.{i}.self_attn.q_norm.weight" in state and f"model.layers.{i}.self_attn.k_norm.weight" in state
    ]  # fmt: skip
    return "minimind3" if len(normed) == len(layers) else "minimind2"


def _label(generation: str) -> str:
    return "minimind-3" if generation == "minimind3" else "MiniMind2"


def _generation_evidence(state: dict[str, torch.Tensor]) -> str:
    has = "model.layers.0.self_attn.q_norm.weight" in state
    return "self_attn.q_norm/k_norm present" if has else "no self_attn.q_norm/k_norm"


def infer_config(state: dict[str, torch.Tensor], *, source: Path | str = "checkpoint") -> MiniMindConfig:
    """Architecture from tensor shapes (MiniMind2 heads assume head_dim 64; see the module docstring)."""
    generation = detect_generation(state, source=source)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ModelError(f"{source}: missing key {key!r}; is this a {_label(generation)} checkpoint?")
        return tuple(state[key].shape)

    vocab, hidden = shape("model.embed_tokens.weight")
    layers = 1 + max((int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))), default=-1)
    q_out = shape("model.layers.0.self_attn.q_proj.weight")[0]
    kv_out = shape("model.layers.0.self_attn.k_proj.weight")[0]
    if generation == "minimind3":
        head_dim = shape("model.layers.0.self_attn.q_norm.weight")[0]
        fields: dict = {
            "hidden_size": hidden,
            "vocab_size": vocab,
            "num_hidden_layers": layers,
            "num_attention_heads": q_out // head_dim,
            "num_key_value_heads": kv_out // head_dim,
            "head_dim": head_dim,
        }
        fields.update(_feed_forward_fields(state, shape, shared_experts=False))
        return _config_or_error(lambda: minimind3_config(**fields), source)
    if q_out % ASSUMED_HEAD_DIM or kv_out % ASSUMED_HEAD_DIM:
        raise ModelError(
            f"{source}: q/k widths {q_out}/{kv_out} are not multiples of head_dim {ASSUMED_HEAD_DIM}; "
            "put the model's config.json beside the checkpoint"
        )
    fields: dict = {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "num_hidden_layers": layers,
        "num_attention_heads": q_out // ASSUMED_HEAD_DIM,
        "num_key_value_heads": kv_out // ASSUMED_HEAD_DIM,
    }
    fields.update(_feed_forward_fields(state, shape, shared_experts=True))
    return _config_or_error(lambda: MiniMindConfig(**fields), source)


def _feed_forward_fields(state: dict, shape, *, shared_experts: bool) -> dict:
    """The FFN part of a config from layer 0's weights: MoE (router, experts, shared experts where the
    generation has them) or dense."""
    if "model.layers.0.mlp.gate.weight" not in state:
        return {"intermediate_size": shape("model.layers.0.mlp.gate_proj.weight")[0]}
    fields = {
        "use_moe": True,
        "n_routed_experts": shape("model.layers.0.mlp.gate.weight")[0],
        "intermediate_size": shape("model.layers.0.mlp.experts.0.gate_proj.weight")[0],
    }
    if shared_experts:
        prefix = "model.layers.0.mlp.shared_experts."
        fields["n_shared_experts"] = len({int(k.split(".")[5]) for k in state if k.startswith(prefix)})
    return fields


def _config_or_error(make, source: object) -> MiniMindConfig:
    try:
        return make()
    except ValueError as exc:
        raise ModelError(f"{source}: inferred architecture is inconsistent: {exc}") from exc


def save_pth(model: MiniMindForCausalLM, path: str | Path) -> None:
    """Write the official checkpoint format (fp16, HF names, lm_head.weight as its own entry), atomically."""
    path = Path(path)
    # .half() on each entry gives lm_head its own storage, as in the official files.
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda tmp: torch.save(state, tmp))


def save_hf_dir(
    model: MiniMindForCausalLM,
    config: MiniMindConfig,
    directory: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write a transformers-format directory: config.json + model.safetensors (tied lm_head omitted)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype).contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"  # transformers drops tied weights from safetensors files
    }
    hf_config = {
        "architectures": ["MiniMindForCausalLM"],
        "model_type": "minimind",
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **config.to_dict(),
    }
    _atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    text = json.dumps(hf_config, indent=2) + "\n"
    _atomic_write(directory / "config.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _read_hf_dir(directory: Path) -> tuple[dict[str, torch.Tensor], Path, MiniMindConfig]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{directory} has no config.json: not a transformers-format model directory")
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = directory / name
        if weights.is_file():
            return read_state_dict(weights), weights, read_config(config_file)
    raise ModelError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def read_config(path: Path) -> MiniMindConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    try:
        return MiniMindConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: {exc}") from exc


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _refuse_legacy(state: dict[str, torch.Tensor], source: Path) -> None:
    if any(k in state for k in _LEGACY_MARKERS) or any(k.startswith("layers.") for k in state):
        raise ModelError(
            f"{source} is in the legacy MiniMind2 layout (tok_embeddings / layers.N.attention.wq ...), the "
            "pre-2025-04-26 release that the current MiniMind2 weights replaced (its RoPE and special tokens "
            "differ too). Download the current MiniMind2 weights (HF-Llama key names) instead."
        )


def _load_strict(
    model: MiniMindForCausalLM, state: dict[str, torch.Tensor], source: Path, config: MiniMindConfig
) -> None:
    expected = model.state_dict()
    state = dict(state)
    embed = state.get("model.embed_tokens.weight")
    if "lm_head.weight" not in state and embed is not None:
        state["lm_head.weight"] = embed  # tied: transformers-format files omit it
    elif embed is not None and not torch.equal(state["lm_head.weight"].float(), embed.float()):
        raise ModelError(
            f"{source}: lm_head.weight differs from model.embed_tokens.weight; MiniMind ties them"
        )
    # Keys that do not fit the detected generation are named with it: a checkpoint of another (or a
    # future) generation says so instead of failing on one key.
    gen = f" for {config.label} (generation detected from the keys / config)"
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{source}: missing key {missing[0]!r}" + _more(missing) + gen)
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelError(
            f"{source}: unexpected key {unexpected[0]!r}" + _more(unexpected) + gen
            + f"; keys that did not fit: {', '.join(unexpected[:5])}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelError(
                f"{source}: key {key!r} has shape {tuple(tensor.shape)}, the config needs "
                f"{tuple(expected[key].shape)}"
            )
        if not tensor.is_floating_point():
            raise ModelError(f"{source}: key {key!r} has dtype {tensor.dtype}, expected floating point")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def _more_count(n: int) -> str:
    return f" (and {n} more)" if n > 0 else ""


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def freeze(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` in fp32 on `device`, in eval mode, with no parameter that trains (a reference or teacher)."""
    model = model.float().to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_frozen(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A frozen model (DPO reference, distillation teacher) from a `.pth` or HF dir; see `freeze`."""
    model, _ = load_model(path)
    return freeze(model, device)
