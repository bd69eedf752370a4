"""MiniMind2 weights -> a Hugging Face Llama folder -> onnxruntime-genai's model builder, for bench/llm.py's rows.

Bench-only (never imported by assistant/). The question it answers (issue 14, "try what the field does"): is the
graph onnxruntime-genai's model builder emits for these weights, run by onnxruntime-genai, faster than ours?

- `hf_folder`: MiniMind2 is Llama-shaped (rotate_half RoPE, RMSNorm, SwiGLU, GQA, tied embeddings) and its state
  dict already uses the HF Llama names, so it loads as-is into transformers' `LlamaForCausalLM` with the same
  sizes, eps and rope_theta; saved with save_pretrained (config.json + model.safetensors) and MiniMind's
  tokenizer files, which the builder copies into its output. No q/k permutation: HF Llama rotates halves too.
- `compare_logits`: the HF model's logits against our torch model's on the same ids (must agree to float
  rounding), so a difference in speed is not a difference in the model.
- `build`: runs the builder (`python -m onnxruntime_genai.models.builder`, its CLI, in a subprocess: it is a
  script that imports its siblings by bare name) for int4/int8 on the CPU EP with the given block size and
  accuracy level (extra_options block_size, accuracy_level).

    .venv/bin/python -m bench.genai_export --out DIR [--seed 0] [--variants int4-b128 int4-b32 int8-b128]

Needs the `genai` extra (`pip install '.[genai]'`: onnxruntime-genai, transformers, onnx-ir) and torch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from speechdata.assets import TOKENIZER_DIR

ACCURACY_LEVEL = 4  # int8 activations x int8-widened weights: what ours uses and the builder's CPU default
# label -> (precision, block size): the builder's forms timed beside ours (ours: int4 and int8 in 128s).
VARIANTS = {
    "int4-b32": ("int4", 32),
    "int4-b64": ("int4", 64),
    "int4-b128": ("int4", 128),
    "int8-b32": ("int8", 32),
    "int8-b128": ("int8", 128),
}
# bench/llm.py's default rows: the builder at our block sizes (each builder run takes ~20-40 s on 2 cores);
# int4-b32, its own default, was 0.8x int4-b64 at 1 thread (BENCHMARKS.md) and is timed on request.
DEFAULT_VARIANTS = ("int4-b128", "int8-b128")


def llama_config(config):
    """transformers' LlamaConfig with the sizes of training.model.MiniMindConfig `config` (dense MiniMind2)."""
    from transformers import LlamaConfig

    if config.generation != "minimind2" or config.use_moe:
        raise ValueError(f"{config.label}{' MoE' if config.use_moe else ''} is not Llama-shaped: only dense MiniMind2")
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        # transformers >= 5 reads RoPE from rope_parameters; older versions from rope_theta above.
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=0,
        torch_dtype="float32",
    )


def hf_model(model):
    """A transformers LlamaForCausalLM holding the torch MiniMindForCausalLM `model`'s weights (strict load)."""
    import torch
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(llama_config(model.config)).to(torch.float32).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: the embedding
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"state dict does not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf


def hf_folder(model, out: Path, tokenizer_dir: Path = TOKENIZER_DIR) -> Path:
    """Save `model` as a Hugging Face Llama folder at `out` (config.json, model.safetensors, tokenizer files)."""
    out.mkdir(parents=True, exist_ok=True)
    hf_model(model).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    return out


def compare_logits(model, hf, ids: list[int]) -> dict:
    """Max |logit difference| of the HF model against our torch model on `ids` (every position), and top-1."""
    import torch

    with torch.inference_mode():
        ours = model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
        theirs = hf(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    return {
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "ref_max_abs": float(np.abs(ours).max()),
        "top1_agreement": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))),
    }


def build(hf_dir: Path, out: Path, precision: str, block_size: int, accuracy_level: int = ACCURACY_LEVEL) -> Path:
    """The builder's CPU model of `hf_dir` at `precision` in blocks of `block_size`, written to `out`."""
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
        "-p", precision, "-e", "cpu", "-c", str(out.parent / "builder-cache"),
        "--extra_options", f"block_size={block_size}", f"accuracy_level={accuracy_level}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        raise RuntimeError(f"model builder failed ({done.returncode}): {done.stderr[-2000:]}")
    return out


def prepare(model, root: Path, variants: tuple[str, ...] = DEFAULT_VARIANTS) -> dict[str, Path]:
    """The builder's models of `model` under root/genai; {"genai int4-b128": folder, ...}."""
    hf_dir = hf_folder(model, root / "genai" / "hf")
    return {f"genai {label}": build(hf_dir, root / "genai" / label, *VARIANTS[label]) for label in variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for hf/ and one folder per variant")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random MiniMind2-Small weights")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(DEFAULT_VARIANTS))
    args = parser.parse_args()
    from bench.llm import prompt_ids, small_model

    model = small_model(args.seed)
    figures = compare_logits(model, hf_model(model), prompt_ids(model.config.vocab_size)[:32])
    print(f"HF Llama vs ours (torch): max |logit diff| {figures['max_abs_diff']:.2e} (logits up to "
          f"{figures['ref_max_abs']:.2f}), top-1 agreement {figures['top1_agreement']:.0%}")  # fmt: skip
    hf_dir = hf_folder(model, args.out / "hf")
    for label in args.variants:
        started = time.perf_counter()
        folder = build(hf_dir, args.out / label, *VARIANTS[label])
        config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        print(f"{label}: {folder} in {time.perf_counter() - started:.1f} s ({config['model']['decoder']['filename']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
