"""Where our LLM's time goes: onnxruntime's profiler over prefill (64-token prompt) and decode steps, by operator.

Loads an exported directory with the runtime (assistant.llm.runtime.MiniMindOnnx) with onnxruntime's profiling
switched on (SessionOptions.enable_profiling), runs bench/llm.py's generation (the same 64-token prompt, greedy,
128 new tokens) --runs times after one warm-up, and sums the profiler's per-node times by operator type,
separately for the prefill run (the model run whose input_ids has the 64 prompt tokens) and the decode steps.
Between the node times and the model run's wall time is the framework's own cost (input binding, the KV buffer,
thread-pool wake-ups), reported as "outside nodes".

    .venv/bin/python -m bench.llm_profile DIR [--threads 2] [--runs 3] [--keep-trace PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import tempfile
from pathlib import Path

from bench.cpu import describe_cpu
from bench.llm import NEW_TOKENS, PROMPT_TOKENS, prompt_ids


def profile(model_dir: Path, threads: int, runs: int, trace_dir: Path) -> Path:
    """Run the generations with profiling on; return the trace file."""
    import onnxruntime as ort

    from assistant.llm import runtime
    from assistant.llm.sampling import Sampling

    class ProfilingOptions(ort.SessionOptions):  # the runtime's own options, plus the profiler
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = str(trace_dir / "ort")

    original = runtime.ort.SessionOptions
    runtime.ort.SessionOptions = ProfilingOptions
    try:
        model = runtime.MiniMindOnnx(model_dir, threads=threads)
    finally:
        runtime.ort.SessionOptions = original
    prompt = prompt_ids(model.architecture.vocab_size)
    sampling = Sampling(greedy=True, max_new_tokens=NEW_TOKENS)
    for _ in range(runs + 1):
        for _ in model.generate(prompt, sampling):
            pass
    return Path(model.session.end_profiling())


def summarise(trace: Path, skip_first: int) -> dict:
    """{"prefill"|"decode": {"runs": n, "run_us": total, "ops": {op_type: us}}} from a profiler trace.

    Node events are assigned to the model run whose time span holds them; the first `skip_first` generations'
    runs (warm-up) are dropped by skipping that many prefill runs and what follows them.
    """
    events = json.loads(trace.read_text())
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])  # fmt: skip
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])  # fmt: skip
    out = {phase: {"runs": 0, "run_us": 0, "ops": collections.Counter()} for phase in ("prefill", "decode")}
    index = 0
    prefills_seen = 0
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        ops: collections.Counter = collections.Counter()
        seq_lens = set()
        while index < len(nodes) and nodes[index]["ts"] < start:
            index += 1
        while index < len(nodes) and nodes[index]["ts"] <= end:
            node = nodes[index]
            ops[node["args"].get("op_name", "?")] += node["dur"]
            for shape in node["args"].get("input_type_shape", [])[:1]:
                for dims in shape.values():
                    if len(dims) >= 2:
                        seq_lens.add(dims[1])
            index += 1
        phase = "prefill" if PROMPT_TOKENS in seq_lens else "decode"
        if phase == "prefill":
            prefills_seen += 1
        if prefills_seen <= skip_first:
            continue
        out[phase]["runs"] += 1
        out[phase]["run_us"] += run["dur"]
        out[phase]["ops"].update(ops)
    return out


def print_summary(summary: dict, model_dir: Path, threads: int) -> None:
    print(describe_cpu())
    print(f"{model_dir}, {threads} threads: onnxruntime profiler, time per model run by operator type")
    for phase, data in summary.items():
        if not data["runs"]:
            continue
        per_run = data["run_us"] / data["runs"]
        print()
        print(f"{phase}: {data['runs']} runs, {per_run / 1000:.2f} ms per run")
        print("| operator | us per run | share of run |")
        print("|---|---|---|")
        node_total = 0.0
        for op, us in data["ops"].most_common():
            node_total += us / data["runs"]
            print(f"| {op} | {us / data['runs']:.0f} | {us / data['run_us']:.0%} |")
        outside = per_run - node_total
        print(f"| outside nodes | {outside:.0f} | {outside / per_run:.0%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model directory (bench/llm.py --keep DIR/int8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="profiled generations after one warm-up")
    parser.add_argument("--keep-trace", type=Path, help="copy the profiler's JSON trace here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llm-profile-") as tmp:
        trace = profile(args.model_dir, args.threads, args.runs, Path(tmp))
        if args.keep_trace:
            shutil.copyfile(trace, args.keep_trace)
        summary = summarise(trace, skip_first=1)
    if args.json:
        print(json.dumps({"cpu": describe_cpu(), **summary}))
    else:
        print_summary(summary, args.model_dir, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
