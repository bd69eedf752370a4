"""Our graph against the builder's graph, operator by operator, both in plain onnxruntime (no genai, no our runtime).

bench/llm.py's genai rows time the builder's graph together with genai's runtime. This separates the graph: both
model.onnx files run in onnxruntime InferenceSessions with the same options (--threads, inter-op 1, sequential),
the same 64-token prompt then 127 greedy decode steps, alternated for --rounds, under onnxruntime's profiler. It
reports, per operator type, the kernel time of the prefill and of one decode step (mean over the steps), and
the node count: what each graph spends where. Kernel times exclude the Python loop, so the I/O differences (the
builder's attention_mask and all-position logits, our total_sequence_length) only count through their nodes.

    .venv/bin/python -m bench.genai_profile --ours /tmp/llm/int4 --builder /tmp/llm/genai/int4-b128 [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.cpu import describe_cpu
from bench.llm import NEW_TOKENS, PROMPT_TOKENS, prompt_ids


class Graph:
    """One model.onnx in a profiled session, fed through its own I/O names (ours or the builder's)."""

    def __init__(self, model: Path, threads: int, prefix: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = prefix
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        self.builder = "attention_mask" in names
        self.pasts = [n for n in names if n.startswith("past")]
        shape = self.session.get_inputs()[names.index(self.pasts[0])].shape
        self.kv_heads, self.head_dim = shape[1], 64 if isinstance(shape[3], str) else shape[3]
        # Each past input's present output, by name (present_key.3 -> past_key.3, present.3.key ->
        # past_key_values.3.key): the order of the outputs is not assumed.
        outputs = [o.name for o in self.session.get_outputs()]
        self.logits = outputs.index("logits")
        present = {
            n.replace("present.", "past_key_values.") if self.builder else n.replace("present_", "past_"): i
            for i, n in enumerate(outputs)
        }
        self.present_index = [present[n] for n in self.pasts]

    def feeds(self, ids: np.ndarray, past: list[np.ndarray]) -> dict:
        feeds = {"input_ids": ids, **dict(zip(self.pasts, past, strict=True))}
        if self.builder:
            feeds["attention_mask"] = np.ones((1, past[0].shape[2] + ids.shape[1]), np.int64)
        return feeds

    def reply(self, prompt: list[int]) -> None:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
        out = self.session.run(None, self.feeds(np.array([prompt], np.int64), [empty] * len(self.pasts)))
        for _ in range(NEW_TOKENS - 1):
            logits = out[self.logits]
            token = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
            past = [out[i] for i in self.present_index]
            out = self.session.run(None, self.feeds(np.array([[token]], np.int64), past))

    def profile(self) -> dict[str, dict[str, float]]:
        """{op type: {"prefill_ms", "step_us", "nodes"}} from the profiler's events (one per node run)."""
        path = Path(self.session.end_profiling())
        events = json.loads(path.read_text())
        path.unlink()
        runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        prefill_starts = {e["ts"] for e in runs[::NEW_TOKENS]}  # each reply: 1 prefill run then the steps
        bounds = sorted((e["ts"], e["ts"] + e["dur"], e["ts"] in prefill_starts) for e in runs)
        table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
        nodes: dict[str, set] = collections.defaultdict(set)
        replies, steps = len(prefill_starts), len(runs) - len(prefill_starts)
        index = 0
        for e in sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                        key=lambda e: e["ts"]):  # fmt: skip
            while index < len(bounds) - 1 and e["ts"] > bounds[index][1]:
                index += 1
            op = e["args"]["op_name"]
            nodes[op].add(e["name"])
            if bounds[index][2]:
                table[op]["prefill_ms"] += e["dur"] / 1000 / replies
            else:
                table[op]["step_us"] += e["dur"] / steps
        for op in table:
            table[op]["nodes"] = len(nodes[op])
        return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", type=Path, required=True, help="our export folder (model.onnx)")
    parser.add_argument("--builder", type=Path, required=True, help="builder output (or any export)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    prompt = prompt_ids(6400, PROMPT_TOKENS)
    with tempfile.TemporaryDirectory(prefix="genai-profile-") as tmp:
        graphs = {
            "ours": Graph(args.ours / "model.onnx", args.threads, f"{tmp}/ours"),
            "builder": Graph(args.builder / "model.onnx", args.threads, f"{tmp}/builder"),
        }
        for graph in graphs.values():  # warm-up, not profiled apart: the first reply is one of --rounds + 1
            graph.reply(prompt)
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for graph in graphs.values():
                graph.reply(prompt)
        tables = {name: graph.profile() for name, graph in graphs.items()}
    print(describe_cpu())
    print(f"{args.threads} thread(s), {args.rounds + 1} replies each (64-token prefill + {NEW_TOKENS - 1} steps), "
          f"kernel time by operator type; 1-min load {load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| operator | nodes ours / builder | prefill ms ours / builder | decode step us ours / builder |")
    print("|---|---|---|---|")
    ops = sorted(set(tables["ours"]) | set(tables["builder"]),
                 key=lambda op: -max(t.get(op, {}).get("step_us", 0) for t in tables.values()))  # fmt: skip
    empty = {"nodes": 0, "prefill_ms": 0.0, "step_us": 0.0}
    for op in [*ops, "total"]:
        if op == "total":
            rows = [{k: sum(r[k] for r in t.values()) for k in empty} for t in tables.values()]
        else:
            rows = [tables[name].get(op, empty) for name in graphs]
        a, b = rows
        print(f"| {op} | {a['nodes']:.0f} / {b['nodes']:.0f} | {a['prefill_ms']:.2f} / {b['prefill_ms']:.2f} | "
              f"{a['step_us']:.0f} / {b['step_us']:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
