"""Fused SwiGLU through onnxruntime's QMoE: an exported model's MLPs as one-expert QMoE nodes, to time against it.

Issue 14 asks to try a fused SwiGLU. onnxruntime has no plain SwiGLU operator on the CPU; the one CPU kernel that
fuses it is QMoE (quantized mixture of experts), which in onnxruntime 1.32 runs block-wise 4/8-bit experts through the
`MatMulNBits` kernels (`accuracy_level`, as ours). With one expert and top-1 routing it is exactly a dense SwiGLU
MLP: gate/up projection, silu(gate) * up, down projection, in one node instead of six (MatMulNBits gate_up,
Split, Sigmoid, Mul, Mul, MatMulNBits down). This writes that variant of an export made with `--quant int8-blocks`
or `int4` (the fused graph): the same packed weights and scales, the gate/up rows interleaved (the CPU kernel
takes only the interleaved layout), a [S, 1] router made from input_ids (one expert: normalized top-1 weight 1),
activation_alpha 1 and activation_beta 0 (silu(gate) * up, not gpt-oss's variant). model.json gets the new
file's sha256; everything else is the export's.

    .venv/bin/python -m bench.swiglu_qmoe /tmp/llm/int4 /tmp/llm/int4-qmoe
    .venv/bin/python -m bench.genai_ab --runs 11 --ours int4=/tmp/llm/int4 --ours int4-qmoe=/tmp/llm/int4-qmoe

Bench-only: measured slower for int4 and not kept (BENCHMARKS.md, "Fused SwiGLU").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np


def fuse(src: Path, dst: Path) -> int:
    """Write `src`'s export to `dst` with every SwiGLU MLP as one QMoE node; returns how many were fused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(src, dst, dirs_exist_ok=True)
    model = onnx.load(str(src / "model.onnx"))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    replaced: dict[int, onnx.NodeProto] = {}  # id(gate_up node) -> its QMoE
    dropped: set[int] = set()

    def expert(name: str, rows: int, cols: int, interleave: bool = False) -> str:
        """A MatMulNBits initializer ([N, ...] flat per row) as a one-expert [1, rows, cols] tensor."""
        array = numpy_helper.to_array(weights[name]).reshape(1, rows, cols)
        if interleave:  # [gate rows | up rows] -> gate 0, up 0, gate 1, up 1, ...
            half = rows // 2
            array = np.stack([array[:, :half], array[:, half:]], axis=2).reshape(1, rows, cols)
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), f"{name}.expert"))
        return f"{name}.expert"

    for down in graph.node:
        if down.op_type != "MatMulNBits" or not down.input[1].startswith("down."):
            continue
        up_mul = producer[down.input[0]]  # silu(gate) * up
        silu = producer[up_mul.input[0]]  # gate * sigmoid(gate)
        sigmoid, split = producer[silu.input[1]], producer[silu.input[0]]
        gate_up = producer[split.input[0]]
        first, second = ({a.name: a.i for a in n.attribute} for n in (gate_up, down))
        bits, block = first["bits"], first["block_size"]
        per_byte = 8 // bits
        inputs = [
            gate_up.input[0],
            "router",
            expert(gate_up.input[1], first["N"], first["K"] // per_byte, interleave=True),
            expert(gate_up.input[2], first["N"], first["K"] // block, interleave=True),
            "",
            expert(down.input[1], second["N"], second["K"] // per_byte),
            expert(down.input[2], second["N"], second["K"] // block),
            "",
        ]
        replaced[id(gate_up)] = helper.make_node(
            "QMoE", inputs, [down.output[0]], name=f"QMoE_{down.name}", domain="com.microsoft",
            k=1, activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0,
            expert_weight_bits=bits, block_size=block, accuracy_level=first["accuracy_level"],
            normalize_routing_weights=1, weights_prepacked=0,
        )  # fmt: skip
        dropped.update(id(n) for n in (gate_up, split, sigmoid, silu, up_mul, down))
    if not replaced:
        raise SystemExit(f"{src}: no MatMulNBits SwiGLU MLP (a fused-graph int8-blocks or int4 export is needed)")
    router = [
        helper.make_node("Cast", ["input_ids"], ["router.ids"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["router.ids"], ["router"], perm=[1, 0]),  # [1, S] -> [S, 1]
    ]
    nodes = router + [replaced.get(id(n), n) for n in graph.node if id(n) in replaced or id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst / "model.onnx"))
    data = (dst / "model.onnx").read_bytes()
    manifest = json.loads((dst / "model.json").read_text(encoding="utf-8"))
    manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (dst / "model.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return len(replaced)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="an exported folder (int8-blocks or int4, fused graph)")
    parser.add_argument("dst", type=Path, help="where to write the QMoE variant")
    args = parser.parse_args()
    print(f"{fuse(args.src, args.dst)} SwiGLU MLPs fused into QMoE nodes in {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
