"""llama.cpp as rows of bench/llm.py: the same weights as GGUF Q8_0 and Q4_0, timed in the same interleaved rounds.

bench/llm.py calls `prepare()` (GGUF files written from its random MiniMind2-Small weights by bench/gguf_export.py)
and starts one `Worker` per file and thread count with this module's worker, which speaks bench/llm.py's worker
protocol (a ready line, one JSON line of figures per "run", the peak RSS after "quit"). Each run is what our
runtime does for a reply: prefill the same 64-token prompt, then greedy decode up to 128 tokens (stopping at eos,
as ours does), TTFT = prefill + first token, tokens/s over the tokens after the first. The loop is driven from
Python through llama-cpp-python's Llama.eval, as ours is through onnxruntime's Python API; per token it costs one
llama_decode and an argmax over the 6400 logits.

Needs the `bench` extra (`pip install '.[bench]'`: llama-cpp-python builds llama.cpp from source for this CPU,
gguf). Without it bench/llm.py prints one line and skips the rows.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

KINDS = ("Q8_0", "Q4_0")
# Our row each llama.cpp row is compared with, and the issue-14 decode target of ours / llama.cpp at 2 threads.
PAIRS = {"Q8_0": ("int8", 1.1), "Q4_0": ("int4", 1.0)}
MAX_PROMPT_TOKENS = 512  # the longest prompt a worker takes (bench/llm.py --prompt-tokens, default 64 and 300)


def available(config=None) -> str | None:
    """None when llama.cpp rows can run (for a model of training.model.MiniMindConfig `config`), else why not."""
    if config is not None and (config.generation != "minimind2" or config.use_moe):
        return f"llama.cpp rows skipped: {config.label} is not Llama-shaped (bench/gguf_export.py writes MiniMind2)"
    missing = [name for name in ("llama_cpp", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"llama.cpp rows skipped: {' and '.join(missing)} not installed (pip install '.[bench]': "
            "llama-cpp-python builds llama.cpp from source)"
        )
    return None


def prepare(model, root: Path, tokenizer_json: Path) -> dict[str, Path]:
    """GGUF Q8_0 and Q4_0 of the torch `model` under root/gguf; {"llama.cpp Q8_0": path, ...}."""
    from bench.gguf_export import export_all

    paths = export_all(model, root / "gguf", tokenizer_json, KINDS)
    return {f"llama.cpp {kind}": paths[kind] for kind in KINDS}


def system_info() -> str:
    """llama.cpp's own line of the CPU features it was built with and uses (AVX2 = 1, AVX512_VNNI = 1 ...)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


# --- worker (a separate process: its RSS is one loaded model's) ---


def worker(gguf_path: Path, threads: int) -> int:
    import llama_cpp

    from bench.llm import NEW_TOKENS, prompt_ids, serve

    llm = llama_cpp.Llama(
        str(gguf_path),
        n_ctx=MAX_PROMPT_TOKENS + NEW_TOKENS + 16,
        n_batch=MAX_PROMPT_TOKENS,  # the whole prompt in one llama_decode, as llama-bench's pp64 does
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=True,  # llama.cpp's CLI default ("auto") enables it on CPU
        verbose=False,
    )
    vocab = llm.n_vocab()
    eos = llm.token_eos()

    def tokens(prompt: list[int]) -> Iterator[int]:
        llm.reset()
        llm.eval(prompt)
        while True:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
            token = int(logits.argmax())
            if token == eos:
                return
            yield token
            llm.eval([token])

    return serve(lambda prompt_tokens: itertools.islice(tokens(prompt_ids(vocab, prompt_tokens)), NEW_TOKENS))


# --- report ---


def ratio_lines(table: dict, threads: tuple[int, ...]) -> list[str]:
    """ "ours int8 / llama.cpp Q8_0" and "ours int4 / llama.cpp Q4_0" for decode and TTFT at each thread count."""
    lines = []
    for kind, (ours, target) in PAIRS.items():
        for n in threads:
            theirs_row, ours_row = table.get(f"llama.cpp {kind}@{n}"), table.get(f"{ours}@{n}")
            if not theirs_row or not ours_row:
                continue
            decode = ours_row["tokens_per_s"] / theirs_row["tokens_per_s"]
            ttft = ours_row["ttft_ms"] / theirs_row["ttft_ms"]
            goal = f" (target >= {target:.1f}x)" if n == 2 else ""
            lines.append(
                f"ours {ours} / llama.cpp {kind} at {n} thread{'s' if n > 1 else ''}: decode {decode:.2f}x{goal}; "
                f"TTFT {ours_row['ttft_ms']:.1f} / {theirs_row['ttft_ms']:.1f} ms = {ttft:.2f}x (lower is better)"
            )
    return lines


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="llama.cpp worker of bench/llm.py (its protocol on stdin/stdout)")
    parser.add_argument("--worker", type=Path, required=True, help="GGUF file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    return worker(args.worker, args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
