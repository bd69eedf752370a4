"""onnxruntime-genai as rows of bench/llm.py: the model builder's graph of the same weights, run by genai itself.

bench/llm.py calls `prepare()` (a Hugging Face Llama folder of its random MiniMind2-Small weights, then the
builder's int4/int8 CPU models of it: bench/genai_export.py) and starts one `Worker` per model and thread count
with this module's worker, which speaks bench/llm.py's worker protocol (a ready line, one JSON line of figures
per "run", the peak RSS after "quit"). The builder's graph has other I/O than ours (attention_mask, its own KV
names, logits for every prompt position), so our runtime cannot run it: the row is the builder's graph and
genai's runtime together, against our graph and our runtime, in the same rounds.

Each run is what our runtime does for a reply: a new og.Generator, append_tokens(the same 64/300-token prompt)
(the prefill: genai computes the logits there), then greedy generate_next_token up to 128 tokens, stopping at eos
(is_done); TTFT = prefill + first token, tokens/s over the tokens after the first. max_length is the prompt + 128,
so genai's KV buffer (past_present_share_buffer, the builder's default) is as long as the reply needs, not the
32768 positions of the model's context.

Session options as ours where genai_config.json can say them: intra_op_num_threads = the row's thread count,
inter-op 1. Ours also sets session.force_spinning_stop, which genai's config has no key for (it made no
difference to our decode speed: BENCHMARKS.md); the 0.2 s pause before each run lets spinning threads settle.

Needs the `genai` extra (`pip install '.[genai]'`). Without it bench/llm.py prints one line and skips the rows.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from bench.genai_export import ACCURACY_LEVEL, DEFAULT_VARIANTS, VARIANTS

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "available", "describe", "prepare", "ratio_lines", "worker"]


def available(config=None) -> str | None:
    """None when genai rows can run (for a model of training.model.MiniMindConfig `config`), else why not."""
    if config is not None and (config.generation != "minimind2" or config.use_moe):
        return f"genai rows skipped: {config.label} is not Llama-shaped (bench/genai_export.py writes MiniMind2)"
    missing = [n for n in ("onnxruntime_genai", "transformers", "onnx_ir") if importlib.util.find_spec(n) is None]
    if missing:
        return f"genai rows skipped: {' and '.join(missing)} not installed (pip install '.[genai]')"
    return None


def prepare(model, root: Path, variants: tuple[str, ...] | None = None) -> dict[str, Path]:
    """The builder's models of the torch `model` under root/genai; {"genai int4-b128": folder, ...}."""
    from bench import genai_export

    return genai_export.prepare(model, root, variants or DEFAULT_VARIANTS)


def describe() -> str:
    """The versions the rows ran: onnxruntime-genai and the onnxruntime it loads (its own copy or ours)."""
    from importlib.metadata import version

    return (
        f"onnxruntime-genai {version('onnxruntime-genai')} (model builder, CPU EP, accuracy_level "
        f"{ACCURACY_LEVEL}), transformers {version('transformers')}, onnxruntime {version('onnxruntime')}"
    )


def ratio_lines(table: dict, threads: tuple[int, ...]) -> list[str]:
    """ "ours int4 / genai int4-b128" (decode and TTFT) for every genai row, against our row of its precision."""
    lines = []
    for key, theirs in table.items():
        name, _, n = key.partition("@")
        if not name.startswith("genai ") or int(n) not in threads:
            continue
        label = name.removeprefix("genai ")
        ours = table.get(f"{VARIANTS[label][0]}@{n}")
        if not ours:
            continue
        lines.append(
            f"ours {VARIANTS[label][0]} / genai {label} at {n} thread{'s' if int(n) > 1 else ''}: decode "
            f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x; TTFT {ours['ttft_ms']:.1f} / "
            f"{theirs['ttft_ms']:.1f} ms = {ours['ttft_ms'] / theirs['ttft_ms']:.2f}x (lower is better)"
        )
    return lines


def session_overlay(threads: int) -> str:
    """genai_config.json overlay: the session options of bench/llm.py's onnxruntime rows."""
    options = {
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "enable_cpu_mem_arena": True,
        "log_severity_level": 3,
    }
    return json.dumps({"model": {"decoder": {"session_options": options}}})


# --- worker (a separate process: its RSS is one loaded model's) ---


def worker(model_dir: Path, threads: int) -> int:
    import onnxruntime_genai as og

    from bench.llm import NEW_TOKENS, prompt_ids, serve

    config = og.Config(str(model_dir))
    config.clear_providers()  # CPU
    config.overlay(session_overlay(threads))
    model = og.Model(config)
    settings = json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8"))["model"]
    vocab, eos = settings["vocab_size"], settings["eos_token_id"]

    def generation(prompt_tokens: int) -> Iterator[int]:
        prompt = prompt_ids(vocab, prompt_tokens)
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(prompt) + NEW_TOKENS, min_length=0)

        def tokens() -> Iterator[int]:
            generator = og.Generator(model, params)
            generator.append_tokens(prompt)
            while True:
                generator.generate_next_token()  # the first one samples the prefill's logits; later ones run a step
                token = int(generator.get_next_tokens()[0])
                if token == eos:
                    return  # not counted, as in ours and llama.cpp's rows
                yield token
                if generator.is_done():
                    return

        return itertools.islice(tokens(), NEW_TOKENS)

    return serve(generation)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="onnxruntime-genai worker of bench/llm.py (its protocol)")
    parser.add_argument("--worker", type=Path, required=True, help="a folder written by the model builder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    return worker(args.worker, args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
