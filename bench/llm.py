"""MiniMind decode speed: our int8, int4 and fp32 ONNX runtime vs torch eager fp32 and llama.cpp, same weights.

For each engine and thread count (1 and 2): time to first token (64-token prompt -> first new token, prefill
included) and decode tokens/s (the 127 steps after the first token of 128), greedy, batch 1. Runs are
interleaved round-robin across all engines, each after a 0.2 s pause, and the median of --runs is reported, so
load from other processes hits every engine alike. Peak RSS is that of the onnxruntime worker process, which
never imports torch (each engine/thread pair is its own worker so the figure is one loaded model's).

Without --model-dir it exports MiniMind2-Small-shaped random weights (seeded; speed does not depend on the
values) with the project's exporter: fp32, then int8 requantized from it. With --model-dir (an int8 or other
export) and optionally --fp32-dir, it uses those, and torch runs random weights of the same shape.

--shape minimind3 times the real minimind-3 shape instead (64M dense: hidden 768, 8 layers, 8/4 heads, q/k
norms; ../shared/reference/minimind3/minimind3-state-dict.tsv), random weights too, exported with the minimind-3
tokenizer; its targets are int8 >= 250 tokens/s at 2 threads and TTFT <= 40 ms.

The report starts with the CPU and its SIMD features (bench/cpu.py). Without --model-dir it also times our int4
(requantized from the same fp32 export) and, when the `bench` extra is installed (llama-cpp-python, gguf),
llama.cpp on GGUF Q8_0 and Q4_0 files of the same weights (bench/llamacpp.py, bench/gguf_export.py), each in its
own worker process in the same rounds, with the ratios ours int8 / llama.cpp Q8_0 and ours int4 / llama.cpp
Q4_0; without the extra those rows are skipped with one printed line. Likewise, with the `genai` extra
(onnxruntime-genai, transformers), the graph onnxruntime-genai's model builder emits for the same weights, run by
onnxruntime-genai itself (bench/genai.py, bench/genai_export.py): int4 and int8 in blocks of 128, as ours
(--genai picks others, e.g. int4-b32, the builder's default; --genai alone none), with the ratios ours / genai.

--extra LABEL=DIR (repeatable) times more exported directories in the same interleaved rounds, e.g. another
quantization or an export made by an older version, as extra rows (and table entries in --json).

--prompt-tokens (default 64 300) times each engine at every prompt length in the same rounds: a voice reply's
first sentence waits for the prefill, and 300 tokens is a follow-up question with its history. An int8 export
with both weight forms (`--quant int8`) is timed four ways: int8-blocks, int8-dynamic, int8-hybrid (both loaded:
dynamic prefill, blocks decode; `llm.weights: hybrid`) and "int8" (auto: the form the runtime picks on this
CPU, named in the report), with the ratios and hybrid's RSS over the blocks' printed. The report starts with the
CPU and its SIMD features (bench/cpu.py).

    .venv/bin/python -m bench.llm [--runs 5] [--json] [--model-dir DIR [--fp32-dir DIR]] [--keep DIR]
                                 [--extra LABEL=DIR ...] [--shape minimind2-small|minimind3]
                                 [--prompt-tokens 64 300] [--genai int4-b128 int8-b128 | --genai]

Why ~490 lines: export, worker processes and interleaved rounds belong to one measurement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from bench import genai, llamacpp
from bench.cpu import describe_cpu
from speechdata.assets import REPO, TOKENIZER_DIR

TOKENIZER = TOKENIZER_DIR / "tokenizer.json"
# --shape: label, tokenizer, targets (int8 tokens/s at 2 threads, TTFT ms, RSS MB or None).
SHAPES = {
    "minimind2-small": ("MiniMind2-Small", TOKENIZER, (500, 20, 150)),
    "minimind3": ("minimind-3 (64M)", TOKENIZER_DIR.parent / "minimind-3" / "tokenizer.json", (250, 40, None)),
}  # fmt: skip
PROMPT_TOKENS = 64
NEW_TOKENS = 128
THREADS = (1, 2)
PAUSE_S = 0.2  # idle time before each timed run


def prompt_ids(vocab_size: int, tokens: int = PROMPT_TOKENS) -> list[int]:
    """A fixed prompt of ordinary (non-special) ids (the first 64 are the same at every length)."""
    return np.random.default_rng(1234).integers(3, vocab_size, tokens).tolist()


# --- onnxruntime worker (a separate process: no torch, honest RSS) ---


def worker(model_dir: Path, threads: int, weights: str = "auto") -> int:
    from assistant.llm.runtime import MiniMindOnnx
    from assistant.llm.sampling import Sampling

    model = MiniMindOnnx(model_dir, threads=threads, weights=weights)
    sampling = Sampling(greedy=True, max_new_tokens=NEW_TOKENS)
    vocab = model.architecture.vocab_size
    form = {"form": model.weights.form.name, "why": model.weights.reason}
    return serve(lambda tokens: model.generate(prompt_ids(vocab, tokens), sampling), form)


def serve(generation: Callable[[int], Iterable[int]], ready: dict | None = None) -> int:
    """The worker protocol on stdin/stdout, for every engine's worker (ours, bench/genai.py, bench/llamacpp.py).

    Prints {"ready": true, ...}; then for each line "run N" times `generation(N)` (a lazy iterable of the new
    tokens of a greedy reply to an N-token prompt: at most NEW_TOKENS, eos not yielded) and prints its figures;
    any other line ends it, with the peak RSS printed last.
    """
    print(json.dumps({"ready": True, "torch_loaded": "torch" in sys.modules, **(ready or {})}), flush=True)
    for line in sys.stdin:
        command, _, tokens = line.strip().partition(" ")
        if command != "run":
            break
        print(json.dumps(timed(generation(int(tokens or PROMPT_TOKENS)))), flush=True)
    print(json.dumps({"rss_mb": peak_rss_mb(), "torch_loaded": "torch" in sys.modules}), flush=True)
    return 0


def timed(tokens: Iterable[int]) -> dict:
    """TTFT, decode speed and count of one generation; the clock starts before `tokens` runs its prefill."""
    started = time.perf_counter()
    first = last = started
    count = 0
    for _ in tokens:
        last = time.perf_counter()
        if count == 0:
            first = last
        count += 1
    return {
        "ttft_ms": (first - started) * 1000,
        "tokens_per_s": (count - 1) / (last - first) if count > 1 else float("nan"),
        "tokens": count,
    }


def peak_rss_mb() -> float:
    """Peak resident set of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a
    worker started by the torch-laden parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


class Worker:
    def __init__(self, name: str, model_dir: Path, threads: int, weights: str = "auto", module: str = "bench.llm"):
        self.name = name
        # module: bench.llamacpp for the llama.cpp rows (same protocol, a GGUF file for model_dir).
        extra = ["--weights", weights] if module == "bench.llm" else []
        self.proc = subprocess.Popen(
            # -m from the repo root: the worker imports this checkout's assistant, whatever is installed
            [sys.executable, "-m", module, "--worker", str(model_dir), "--threads", str(threads), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        ready = self._read()
        if ready.get("torch_loaded"):
            raise SystemExit(f"{name}: the onnxruntime worker imported torch")
        self.form, self.why = ready.get("form"), ready.get("why")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, prompt_tokens: int = PROMPT_TOKENS) -> dict:
        self.proc.stdin.write(f"run {prompt_tokens}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        final = self._read()
        self.proc.wait()
        return final


# --- torch eager baseline (this process) ---


class TorchEngine:
    def __init__(self, model, threads: int) -> None:
        self.model = model
        self.threads = threads

    def run(self, prompt_tokens: int = PROMPT_TOKENS) -> dict:
        import torch

        torch.set_num_threads(self.threads)
        prompt = torch.tensor([prompt_ids(self.model.config.vocab_size, prompt_tokens)], dtype=torch.long)
        return timed(itertools.islice(self._tokens(prompt), NEW_TOKENS))

    def _tokens(self, prompt) -> Iterator[int]:
        import torch

        with torch.inference_mode():
            out = self.model(prompt, use_cache=True, logits_to_keep=1)
            while (token := int(out.logits[0, -1].argmax())) != self.model.config.eos_token_id:
                yield token
                step = torch.tensor([[token]], dtype=torch.long)
                out = self.model(step, out.past_key_values, use_cache=True, logits_to_keep=1)


def small_model(seed: int, shape: str = "minimind2-small"):
    import torch

    from training.model import MiniMindConfig, MiniMindForCausalLM, minimind3_config

    torch.manual_seed(seed)
    config = minimind3_config() if shape == "minimind3" else MiniMindConfig()
    return MiniMindForCausalLM(config).eval()


def export_dirs(model, root: Path, tokenizer: Path = TOKENIZER) -> tuple[Path, Path]:
    """fp32 and int8 exports of `model` made with assistant-export (CLI entry point, in-process)."""
    from export.cli import main as export_main
    from training.weights import save_pth

    checkpoint = root / f"{model.config.generation}-random.pth"
    save_pth(model, checkpoint)
    fp32, int8 = root / "fp32", root / "int8"
    args = [str(checkpoint), "--out", str(fp32), "--quant", "fp32", "--tokenizer", str(tokenizer)]
    if export_main(args) != 0:
        raise SystemExit("fp32 export failed")
    # Random weights: the int8 parity gate is about real models, not speed; do not let it refuse.
    if export_main(["requantize", str(fp32), "--out", str(int8), "--quant", "int8", "--min-top1", "0"]) != 0:
        raise SystemExit("int8 requantize failed")
    return int8, fp32


def int4_dir(fp32: Path, root: Path) -> Path:
    """Our int4 (MatMulNBits 4-bit blocks) requantized from the fp32 export: the row llama.cpp Q4_0 is compared with."""
    from export.cli import main as export_main

    int4 = root / "int4"
    if export_main(["requantize", str(fp32), "--out", str(int4), "--quant", "int4", "--min-top1", "0"]) != 0:
        raise SystemExit("int4 requantize failed")
    return int4


# --- main ---


def measure(args: argparse.Namespace, root: Path) -> dict:
    import torch

    model = small_model(args.seed, args.shape)
    if args.model_dir is None:
        int8_dir, fp32_dir = export_dirs(model, root, SHAPES[args.shape][1])
    else:
        int8_dir, fp32_dir = args.model_dir, args.fp32_dir
    ours = [("int8", int8_dir), ("fp32", fp32_dir), *args.extra]
    if args.model_dir is None:
        ours.insert(2, ("int4", int4_dir(fp32_dir, root)))
    skipped = llamacpp.available(model.config)
    if args.model_dir is not None:  # the GGUF would hold torch's random weights, not those of --model-dir
        skipped = "llama.cpp rows skipped: --model-dir (llama.cpp runs the weights bench/llm.py exports itself)"
    gguf = {} if skipped else llamacpp.prepare(model, root, SHAPES[args.shape][1])
    genai_skipped = genai.available(model.config) if args.genai else "genai rows skipped: --genai with no variant"
    if args.model_dir is not None:
        genai_skipped = "genai rows skipped: --model-dir (the builder converts the weights bench/llm.py makes)"
    built = {} if genai_skipped else genai.prepare(model, root, tuple(args.genai))
    # An export with both int8 forms: each form forced, besides "int8" (auto, the runtime's own choice).
    forms = int8_forms(int8_dir)
    rows = [(n, d, "auto", "bench.llm") for n, d in ours[:1]] + [(n, d, w, "bench.llm") for n, d, w in forms]
    rows += [(n, d, "auto", "bench.llm") for n, d in ours[1:]]
    rows += [(n, path, "auto", "bench.llamacpp") for n, path in gguf.items()]
    rows += [(n, path, "auto", "bench.genai") for n, path in built.items()]
    engines: dict[str, object] = {}
    workers: list[Worker] = []
    for threads in THREADS:
        for name, target, weights, module in rows:
            if target is not None:
                worker_ = Worker(f"{name}@{threads}", target, threads, weights, module)
                workers.append(worker_)
                engines[f"{name}@{threads}"] = worker_
        engines[f"torch@{threads}"] = TorchEngine(model, threads)
    lengths = args.prompt_tokens
    results: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in lengths} for name in engines}
    try:
        for engine in engines.values():  # warm-up: first-run allocations and thread pools
            engine.run(max(lengths))
        for _ in range(args.runs):
            for name, engine in engines.items():
                for length in lengths:
                    # The previous engine's thread pool keeps spinning for a while after its run (onnxruntime's
                    # and OpenMP's default); without a pause that spinning lands on this engine's first token.
                    # A reply starts after idle listening too.
                    time.sleep(PAUSE_S)
                    results[name][length].append(engine.run(length))
        rss = {w.name: w.close()["rss_mb"] for w in workers}
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
    table = {}
    for name, by_length in results.items():
        prompts = {
            length: {
                "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "tokens": min(r["tokens"] for r in runs),
            }
            for length, runs in by_length.items()
        }
        # The first prompt length's figures at the top level, as before --prompt-tokens.
        table[name] = {**prompts[lengths[0]], "rss_mb": rss.get(name), "prompts": prompts}
        engine = engines[name]
        if isinstance(engine, Worker):
            table[name]["form"] = engine.form
            table[name]["form_reason"] = engine.why
    return {
        "table": table,
        "cpu": describe_cpu(),
        "prompt_tokens": lengths,
        "extra": {label: str(directory) for label, directory in args.extra},
        "torch_version": torch.__version__,
        "llamacpp": {name: str(path) for name, path in gguf.items()},
        "llamacpp_info": skipped or f"llama.cpp: {llamacpp.system_info()}",
        "genai": {name: str(path) for name, path in built.items()},
        "genai_info": genai_skipped or genai.describe(),
        "int8_dir": str(int8_dir),
        "fp32_dir": str(fp32_dir) if fp32_dir else None,
    }


def int8_forms(int8_dir: Path) -> list[tuple[str, Path, str]]:
    """("int8-blocks", dir, "blocks"), ("int8-dynamic", dir, "dynamic") and ("int8-hybrid", dir, "hybrid": both
    loaded, dynamic prefill, blocks decode) when the export carries both forms."""
    manifest = json.loads((Path(int8_dir) / "model.json").read_text(encoding="utf-8"))
    usable = [name for name, entry in manifest.get("forms", {}).items() if entry.get("passed")]
    if len(usable) < 2:
        return []
    return [(f"int8-{name}", Path(int8_dir), name) for name in (*usable, "hybrid")]


def summary(report: dict) -> dict:
    t = report["table"]

    def get(name: str, key: str):
        return t[name][key] if name in t else None

    out = {
        "int8_tokens_per_s": get("int8@2", "tokens_per_s"),
        "fp32_tokens_per_s": get("fp32@2", "tokens_per_s"),
        "torch_tokens_per_s": get("torch@2", "tokens_per_s"),
        "int8_ttft_ms": get("int8@2", "ttft_ms"),
        "fp32_ttft_ms": get("fp32@2", "ttft_ms"),
        "torch_ttft_ms": get("torch@2", "ttft_ms"),
        "rss_mb": get("int8@2", "rss_mb"),
    }
    out["int8_over_torch"] = _ratio(out["int8_tokens_per_s"], out["torch_tokens_per_s"])
    out["int8_over_fp32"] = _ratio(out["int8_tokens_per_s"], out["fp32_tokens_per_s"])
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def print_table(report: dict, args: argparse.Namespace) -> None:
    t = report["table"]
    load = os.getloadavg()[0]
    name, _, (rate_target, ttft_target, rss_target) = SHAPES[args.shape]
    print(report["cpu"])
    print(report["llamacpp_info"])
    print(report["genai_info"])
    print(f"{name} shape, {report['prompt_tokens'][0]}-token prompt + {NEW_TOKENS} new tokens, greedy, batch 1, "
          f"median of {args.runs} interleaved runs; 1-min load average at the end {load:.1f}")  # fmt: skip
    print()
    print("| engine | threads | TTFT ms | tokens/s | tok/s vs torch | tok/s vs fp32 | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for threads in THREADS:
        torch_rate = t[f"torch@{threads}"]["tokens_per_s"]
        fp32_rate = t.get(f"fp32@{threads}", {}).get("tokens_per_s")
        labels = {
            "int8": "onnxruntime int8" + (f" (auto: {t[f'int8@{threads}']['form']})" if "int8-blocks@1" in t else ""),
            "int8-blocks": "onnxruntime int8-blocks",
            "int8-dynamic": "onnxruntime int8-dynamic",
            "int8-hybrid": "onnxruntime int8-hybrid (dynamic prefill, blocks decode)",
            "int4": "onnxruntime int4",
            "fp32": "onnxruntime fp32",
            "torch": "torch eager fp32",
            **{name: name for name in report["llamacpp"]},
            **{name: f"{name} (builder graph, genai runtime)" for name in report["genai"]},
        }
        labels.update({name: f"onnxruntime {name} (extra)" for name, _ in args.extra})
        for engine, label in labels.items():
            row = t.get(f"{engine}@{threads}")
            if row is None:
                continue
            rss = f"{row['rss_mb']:.0f}" if row["rss_mb"] else "-"
            vs_fp32 = f"{row['tokens_per_s'] / fp32_rate:.2f}x" if fp32_rate else "-"
            print(f"| {label} | {threads} | {row['ttft_ms']:.1f} | {row['tokens_per_s']:.0f} | "
                  f"{row['tokens_per_s'] / torch_rate:.2f}x | {vs_fp32} | {rss} |")  # fmt: skip
    s = summary(report)
    print()
    rss_note = f" (target <= {rss_target})" if rss_target else ""
    rate_note = f"6x, >= {rate_target}" if args.shape == "minimind2-small" else f"{rate_target}"
    print(f"at 2 threads: int8 {s['int8_tokens_per_s']:.0f} tok/s = {s['int8_over_torch']:.2f}x torch "
          f"(target >= {rate_note} tok/s); TTFT {s['int8_ttft_ms']:.1f} ms (target <= {ttft_target}); "
          f"RSS {s['rss_mb']:.0f} MB{rss_note}")  # fmt: skip
    for line in llamacpp.ratio_lines(t, THREADS) + genai.ratio_lines(t, THREADS):
        print(line)
    print_prompt_lengths(report)
    short = [name for name, row in t.items() if row["tokens"] < NEW_TOKENS]
    if short:
        print(f"note: stopped at eos before {NEW_TOKENS} tokens: {', '.join(short)}")


def print_prompt_lengths(report: dict) -> None:
    """TTFT and decode at every --prompt-tokens length, and the int8 forms' ratios at each."""
    t = report["table"]
    lengths = report["prompt_tokens"]
    print()
    print("| engine | threads | " + " | ".join(f"TTFT ms @{n} | tok/s @{n}" for n in lengths) + " |")
    print("|---|---|" + "---|---|" * len(lengths))
    for key, row in t.items():
        name, _, threads = key.partition("@")
        cells = " | ".join(f"{p['ttft_ms']:.1f} | {p['tokens_per_s']:.0f}" for p in row["prompts"].values())
        print(f"| {name} | {threads} | {cells} |")
    for threads in THREADS:
        blocks, dynamic, auto = (t.get(f"{n}@{threads}") for n in ("int8-blocks", "int8-dynamic", "int8"))
        if not (blocks and dynamic and auto):
            continue
        print()
        print(f"int8 forms at {threads} threads: auto chose {auto['form']} ({auto['form_reason']})")
        for n in lengths:
            b, d, a = blocks["prompts"][n], dynamic["prompts"][n], auto["prompts"][n]
            best = max(b["tokens_per_s"], d["tokens_per_s"])
            print(f"  @{n}: dynamic/blocks decode {d['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                  f"TTFT blocks/dynamic {b['ttft_ms'] / d['ttft_ms']:.2f}x; auto decode = "
                  f"{a['tokens_per_s'] / best:.2f}x the faster form")  # fmt: skip
            hybrid = t.get(f"int8-hybrid@{threads}")
            if hybrid:
                h = hybrid["prompts"][n]
                print(f"        hybrid: TTFT {h['ttft_ms'] / d['ttft_ms']:.2f}x dynamic's, decode "
                      f"{h['tokens_per_s'] / b['tokens_per_s']:.2f}x blocks'")  # fmt: skip
        hybrid = t.get(f"int8-hybrid@{threads}")
        if hybrid and hybrid["rss_mb"] and blocks["rss_mb"]:
            extra = hybrid["rss_mb"] - blocks["rss_mb"]
            print(f"  hybrid peak RSS {hybrid['rss_mb']:.0f} MB = blocks' + {extra:.0f} MB")


def _labelled_dir(text: str) -> tuple[str, Path]:
    label, sep, directory = text.partition("=")
    if not sep or not label or label in ("int8", "int8-blocks", "int8-dynamic", "int8-hybrid", "int4", "fp32", "torch"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=DIR with a label other than int8/int4/fp32/torch")
    return label, Path(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per engine (median reported)")
    parser.add_argument("--model-dir", type=Path, help="an exported model to time instead of exporting one")
    parser.add_argument("--fp32-dir", type=Path, help="with --model-dir: an fp32 export of the same weights")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default="minimind2-small", help="model shape of the random weights"
    )
    parser.add_argument(
        "--extra",
        type=_labelled_dir,
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also time this exported directory (repeatable)",
    )
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        nargs="+",
        default=[PROMPT_TOKENS, 300],
        metavar="N",
        help="prompt lengths timed in the same rounds (default: %(default)s; the first is the main table's)",
    )
    parser.add_argument(
        "--genai",
        nargs="*",
        choices=tuple(genai.VARIANTS),
        default=list(genai.DEFAULT_VARIANTS),
        metavar="VARIANT",
        help="onnxruntime-genai builder models to time (default: %(default)s; none: --genai alone)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.threads, args.weights)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
            report = measure(args, Path(tmp))
    if args.json:
        print(json.dumps({**summary(report), **report}))
    else:
        print_table(report, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
