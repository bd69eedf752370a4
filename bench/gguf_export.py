"""MiniMind2 weights -> GGUF (llama.cpp's format), so bench/llm.py can time llama.cpp on the same weights.

Bench-only (never imported by assistant/): MiniMind2 is Llama-shaped (RMSNorm, RoPE, GQA attention, SwiGLU,
tied embeddings), so it is written as a `llama` GGUF with the `gguf` package, llama.cpp's own writer:
- tensor names through gguf's HF -> GGUF name map (model.layers.N.self_attn.q_proj -> blk.N.attn_q ...);
- q and k rows permuted from the rotate-half RoPE layout (pairs i, i + D/2) to llama.cpp's (pairs 2i, 2i+1), the
  permutation llama.cpp's convert_hf_to_gguf.py applies to Llama checkpoints;
- no output.weight: with it absent llama.cpp uses token_embd for the lm_head, which is MiniMind's tying;
- the tokenizer as gguf's "gpt2" (byte-level BPE) with its pre-tokenizer named explicitly, as MiniMind's README
  does for llama.cpp (whose converter does not recognise the tokenizer's hash). The README names "smollm"; that
  one splits every digit apart ("12" -> "1" "2") while tokenizer.json's ByteLevel pre-tokenizer (use_regex) keeps
  digit runs, so this writes "gpt-2", whose regex is exactly the ByteLevel one: llama.cpp then tokenizes Chinese,
  English, digits, whitespace and the special tokens as `tokenizers` does (compare_tokenizer, SAMPLE_TEXTS).

Q8_0 and Q4_0 are made from the f32 file by llama.cpp's own quantizer (llama_model_quantize through
llama-cpp-python), so they are the files a llama.cpp user would make with llama-quantize: for Q4_0 that keeps the
tied embedding / lm_head in Q6_K, llama.cpp's default for the output tensor.

    .venv/bin/python -m bench.gguf_export --out DIR [--seed 0]     (writes f32, Q8_0, Q4_0; checks f32 vs torch)

Needs the `bench` extra (`pip install '.[bench]'`: gguf, llama-cpp-python) and torch (the `export` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from speechdata.assets import TOKENIZER_DIR

PRE_TOKENIZER = "gpt-2"  # MiniMind's README says "smollm", which splits digits apart: see the module docstring
QUANT_TYPES = ("Q8_0", "Q4_0")
# llama.cpp's llama_ftype values (llama.h): the whole-file type llama_model_quantize makes.
_FTYPES = {"Q8_0": 7, "Q4_0": 2}


def rope_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """[n_heads * D, H] rows of a q or k projection, rotate-half pairs (i, i + D/2) -> adjacent pairs (2i, 2i+1).

    Within each head the rows [x0 .. x_{D/2-1}, y0 .. y_{D/2-1}] become [x0, y0, x1, y1, ...]: llama.cpp's
    `llama` architecture rotates adjacent pairs (GGML rope mode 0), HF/MiniMind the two halves.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def tokenizer_vocab(tokenizer_json: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, gguf token types, merges as "a b") from a HF tokenizer.json (byte-level BPE)."""
    import gguf

    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_json}: model type {model.get('type')!r}, expected a byte-level BPE")
    by_id: dict[int, str] = {index: token for token, index in model["vocab"].items()}
    special = set()
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    if max(by_id) >= vocab_size:
        raise ValueError(f"{tokenizer_json}: token id {max(by_id)} is outside the model's vocabulary {vocab_size}")
    tokens, types = [], []
    for index in range(vocab_size):
        if index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
        else:  # ids the tokenizer never produces (the model's table may be larger): llama.cpp's converter's name
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    # tokenizers >= 0.20 writes merges as [a, b] pairs, older versions as "a b" strings; GGUF wants "a b".
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, [int(t) for t in types], merges


def write_gguf(
    state: Mapping[str, np.ndarray],
    config,
    tokenizer_json: Path,
    out: Path,
    *,
    dtype: str = "f32",
    name: str = "MiniMind2",
) -> Path:
    """Write the MiniMind2 state dict `state` (HF names, numpy arrays) as a llama GGUF at `out`.

    config: a training.model.MiniMindConfig (MiniMind2 dense only: minimind-3's q/k norms and MoE are not the
    `llama` architecture). dtype "f32" or "f16" for the 2-D weights; norms stay f32 as llama.cpp keeps them.
    """
    import gguf

    if config.generation != "minimind2" or config.use_moe:
        raise ValueError(f"{config.label}{' MoE' if config.use_moe else ''} is not Llama-shaped: only dense MiniMind2")
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype {dtype!r}: choose f32 or f16 (quantize with quantize_gguf)")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    tokens, types, merges = tokenizer_vocab(tokenizer_json, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(0)  # <|endoftext|>
    writer.add_add_bos_token(False)  # MiniMind's prompts carry <|im_start|> themselves (tokenizer_config.json)
    template = _chat_template(tokenizer_json)
    if template:
        writer.add_chat_template(template)

    for hf_name, array in state.items():
        if hf_name == "lm_head.weight":
            continue  # tied to the embedding: llama.cpp reuses token_embd when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"state dict key {hf_name!r} has no llama GGUF name")
        array = np.asarray(array, dtype=np.float32)
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = rope_to_interleaved(array, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = rope_to_interleaved(array, config.num_key_value_heads)
        if dtype == "f16" and array.ndim == 2:
            array = array.astype(np.float16)
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _chat_template(tokenizer_json: Path) -> str | None:
    config_file = tokenizer_json.parent / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")


def quantize_gguf(src: Path, dst: Path, kind: str, threads: int = 2) -> Path:
    """`kind` (Q8_0 or Q4_0) version of the f32/f16 GGUF `src`, made by llama.cpp's llama_model_quantize."""
    import ctypes

    import llama_cpp

    if kind not in _FTYPES:
        raise ValueError(f"quantization {kind!r}: choose one of {', '.join(QUANT_TYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[kind]
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not dst.is_file():
        raise RuntimeError(f"llama_model_quantize {src} -> {dst} ({kind}) failed with status {status}")
    return dst


def state_arrays(model) -> dict[str, np.ndarray]:
    """A torch MiniMindForCausalLM's state dict as float32 numpy arrays."""
    return {name: t.detach().float().cpu().numpy() for name, t in model.state_dict().items()}


def export_all(model, out_dir: Path, tokenizer_json: Path, kinds: tuple[str, ...] = QUANT_TYPES) -> dict[str, Path]:
    """f32 GGUF of `model` plus the llama.cpp-quantized `kinds`; {"f32": path, "Q8_0": path, ...}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    f32 = write_gguf(state_arrays(model), model.config, tokenizer_json, out_dir / "model-f32.gguf")
    paths = {"f32": f32}
    for kind in kinds:
        paths[kind] = quantize_gguf(f32, out_dir / f"model-{kind}.gguf", kind)
    return paths


# --- checks against torch (llama-cpp-python) ---


def compare_logits(gguf_path: Path, model, ids: list[int], threads: int = 2) -> dict:
    """llama.cpp's logits for `ids` (every position) against torch's, and the greedy continuations of both."""
    import llama_cpp
    import torch

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, n_threads=threads, n_batch=256, logits_all=True, verbose=False)
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)], dtype=np.float32)  # [T, V]
    with torch.inference_mode():
        ref = model(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    scale = float(np.abs(ref).max())
    top1 = float(np.mean(ours.argmax(-1) == ref.argmax(-1)))
    greedy_gguf = _greedy_llama(llm, ids, 8)
    greedy_torch = _greedy_torch(model, ids, 8)
    return {
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "ref_max_abs": scale,
        "top1_agreement": top1,
        "greedy_gguf": greedy_gguf,
        "greedy_torch": greedy_torch,
    }


def _greedy_llama(llm, ids: list[int], count: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(count):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def _greedy_torch(model, ids: list[int], count: int) -> list[int]:
    import torch

    seq = list(ids)
    with torch.inference_mode():
        for _ in range(count):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids) :]


def compare_tokenizer(gguf_path: Path, tokenizer_json: Path, texts: list[str]) -> list[tuple[str, bool]]:
    """(text, llama.cpp's token ids == tokenizers' ids) for each text: checks the pre-tokenizer named above."""
    import llama_cpp
    from tokenizers import Tokenizer

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=64, vocab_only=True, verbose=False)
    reference = Tokenizer.from_file(str(tokenizer_json))
    return [
        (text, llm.tokenize(text.encode(), add_bos=False, special=True) == reference.encode(text).ids) for text in texts
    ]


SAMPLE_TEXTS = [
    "你好，我是MiniMind。Hello world! 今天天气怎么样？",
    "<|im_start|>user\nWhat's 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "  two  spaces, tabs\tand\nnewlines; don't stop: 3.14159 ¥200",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for model-f32.gguf, model-Q8_0.gguf ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random MiniMind2-Small weights")
    args = parser.parse_args()
    from bench.llm import prompt_ids, small_model

    tokenizer_json = TOKENIZER_DIR / "tokenizer.json"
    model = small_model(args.seed)
    started = time.perf_counter()
    paths = export_all(model, args.out, tokenizer_json)
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - started:.1f} s")
    ids = prompt_ids(model.config.vocab_size)[:32]
    for kind, path in paths.items():
        figures = compare_logits(path, model, ids)
        print(f"{kind}: logits vs torch max |diff| {figures['max_abs_diff']:.2e} (logits up to "
              f"{figures['ref_max_abs']:.2f}), top-1 agreement {figures['top1_agreement']:.0%}, greedy "
              f"{figures['greedy_gguf']} vs torch {figures['greedy_torch']}")  # fmt: skip
    for text, same in compare_tokenizer(paths["f32"], tokenizer_json, SAMPLE_TEXTS):
        print(f"tokenizer {'same' if same else 'DIFFERENT'}: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
