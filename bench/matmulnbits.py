"""The MatMulNBits kernels of exported models alone, alternated: which block size is faster on this CPU.

A whole decode step (bench/llm.py, bench/genai_ab.py) mixes the weight kernels with attention, norms and the
runtime, and on a shared machine its medians move by 10-30 % between rounds. This takes every `MatMulNBits`
node of each export (the same packed weights, scales and attributes), gives them a one-token input ([1, 1, K]
per distinct K: what a decode step feeds them), and times one run of all of them in one session per export,
the sessions alternated in the same process, median of --rounds. The first export is the baseline: each row
prints its speed relative to it.

    .venv/bin/python -m bench.matmulnbits --threads 1 2 /tmp/llm/int4 /tmp/llm/variants/int4-b128-a4

Export variants to compare come from bench/llm_variants.py (QUANT:BLOCK:LEVEL). Session options are the
runtime's: intra-op threads, one inter-op thread, spinning on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.cpu import describe_cpu


def kernel_session(model_file: Path, threads: int):
    """A session of `model_file`'s MatMulNBits nodes alone, each fed x{K}; returns (session, feed, node count)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(model_file))
    weights = {t.name: t for t in model.graph.initializer}
    nodes, outputs, used, widths = [], [], {}, set()
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        out = f"y{len(nodes)}"
        nodes.append(
            helper.make_node("MatMulNBits", [f"x{attrs['K']}", *node.input[1:]], [out], domain="com.microsoft", **attrs)
        )
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 1, attrs["N"]]))
        used.update({name: weights[name] for name in node.input[1:] if name})
        widths.add(attrs["K"])
    if not nodes:
        raise SystemExit(f"{model_file}: no MatMulNBits node (an int8-dynamic or fp32 export?)")
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, 1, k]) for k in sorted(widths)]
    graph = helper.make_graph(nodes, "matmulnbits", inputs, outputs, list(used.values()))
    kernels = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session = ort.InferenceSession(kernels.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {f"x{k}": rng.standard_normal((1, 1, k), dtype=np.float32) for k in widths}
    return session, feed, len(nodes)


def time_runs(session, feed: dict, runs: int) -> float:
    """Mean ms of one run over `runs` back-to-back runs."""
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - started) / runs * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", type=Path, nargs="+", help="exported folders; the first is the baseline")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--runs", type=int, default=100, help="runs per timing (one round times each once)")
    args = parser.parse_args()
    print(describe_cpu())
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| export | threads | MatMulNBits nodes | ms per step (median) | speed vs the first |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        sessions = [kernel_session(d / "model.onnx", threads) for d in args.model_dirs]
        for session, feed, _ in sessions:  # warm-up: prepacking, the arena, caches
            time_runs(session, feed, args.runs // 2)
        times: list[list[float]] = [[] for _ in sessions]
        for _ in range(args.rounds):
            for i, (session, feed, _) in enumerate(sessions):
                times[i].append(time_runs(session, feed, args.runs))
        base = statistics.median(times[0])
        for folder, (_, _, count), measured in zip(args.model_dirs, sessions, times, strict=True):
            median = statistics.median(measured)
            print(f"| {folder} | {threads} | {count} | {median:.3f} | {base / median:.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
