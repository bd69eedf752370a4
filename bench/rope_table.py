"""An experiment from the builder's graph: a copy of our fused export with RoPE's cos/sin as a constant table.

Our fused graph (export/fused_graph.py) computes cos/sin for positions 0..P+S-1 on every call (Range, Cast,
Unsqueeze, Mul, Cos, Sin: 6 nodes per step); onnxruntime-genai's model builder stores cos_cache/sin_cache
[context, D/2] as initializers and GroupQueryAttention indexes them. This writes a copy of an export with the
table in place of those nodes (`--rows` positions: a copy only valid for prompt + reply <= rows), model.json's
sha256 updated, so bench/genai_ab.py or bench/llm.py --extra can time it beside the original.

    .venv/bin/python -m bench.rope_table /tmp/llm/int4 --out /tmp/llm/int4-ropetable [--rows 1024]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.manifest import MANIFEST, sha256_file


def with_rope_table(model: onnx.ModelProto, rows: int) -> list[str]:
    """Replace the Cos/Sin nodes (and what only fed them) by [rows, D/2] tables; the removed op types."""
    graph = model.graph
    cos, sin = (next(n for n in graph.node if n.op_type == op) for op in ("Cos", "Sin"))
    inv_freq = next(numpy_helper.to_array(t) for t in graph.initializer if t.name == "inv_freq").reshape(1, -1)
    angles = np.arange(rows, dtype=np.float32)[:, None] * inv_freq  # the graph's own product, in float32
    graph.initializer.extend([
        numpy_helper.from_array(np.cos(angles).astype(np.float32), cos.output[0]),
        numpy_helper.from_array(np.sin(angles).astype(np.float32), sin.output[0]),
    ])  # fmt: skip
    nodes = [n for n in graph.node if n not in (cos, sin)]
    outputs = {o.name for o in graph.output}
    while True:  # drop nodes whose outputs nothing reads any more
        used = {name for n in nodes for name in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    removed = [n.op_type for n in graph.node if n not in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    return removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="an export of the fused graph (model.onnx, model.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1024, help="positions in the table (prompt + reply must fit)")
    args = parser.parse_args()
    manifest = json.loads((args.src / MANIFEST).read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest["files"].items():  # every graph: an int8 export carries both weight forms
        if name.endswith(".onnx"):
            model = onnx.load(str(args.src / name))
            removed = with_rope_table(model, args.rows)
            onnx.save(model, str(args.out / name))
        else:
            shutil.copyfile(args.src / name, args.out / name)
        entry["sha256"], entry["bytes"] = sha256_file(args.out / name), (args.out / name).stat().st_size
    for form in manifest.get("forms", {}).values():  # each weight form names its file's sha256 too
        if form.get("file") in manifest["files"]:
            form["sha256"] = manifest["files"][form["file"]]["sha256"]
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: removed {', '.join(removed)}; cos/sin tables of {args.rows} positions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
