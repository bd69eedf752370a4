"""bench/swiglu_qmoe.py: an export's SwiGLU MLPs as one-expert QMoE nodes compute what the MatMulNBits graph computes.

The "fused SwiGLU" experiment of BENCHMARKS.md times such a copy against the export; this checks the copy is the
same model: one QMoE node per layer, none of the MLP's separate nodes left, and the logits and present KV of a
prefill and a decode step within int8-activation rounding of the unedited int4 graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is in the export extra")
torch = pytest.importorskip("torch", reason="torch is in the export extra")
ort = pytest.importorskip("onnxruntime")

from bench.swiglu_qmoe import fuse  # noqa: E402
from export.fused_graph import build_fused_graph  # noqa: E402
from export.quantize import quantize  # noqa: E402
from training.model import MiniMindConfig, MiniMindForCausalLM  # noqa: E402

TINY = MiniMindConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _run(path, ids: np.ndarray, past: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids}
    for i in range(TINY.num_hidden_layers):
        feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = past[2 * i], past[2 * i + 1]
    return session.run(None, feeds)


def _close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert int(a[0].argmax()) == int(b[0].argmax())
    for x, y in zip(a, b, strict=True):
        assert np.abs(x - y).max() <= 0.03 * np.abs(x).max() + 1e-4


def test_qmoe_copy_is_the_same_model(tmp_path):
    torch.manual_seed(7)
    state = {k: v.numpy() for k, v in MiniMindForCausalLM(TINY).state_dict().items()}
    fp32, int4, fused = tmp_path / "fp32.onnx", tmp_path / "int4", tmp_path / "int4-qmoe"
    onnx.save(build_fused_graph(state, TINY), str(fp32))
    int4.mkdir()
    quantize(fp32, int4 / "model.onnx", "int4")
    (int4 / "model.json").write_text(json.dumps({"files": {"model.onnx": {}}}), encoding="utf-8")

    assert fuse(int4, fused) == TINY.num_hidden_layers
    ops = [n.op_type for n in onnx.load(str(fused / "model.onnx")).graph.node]
    assert ops.count("QMoE") == TINY.num_hidden_layers and not {"Split", "Sigmoid"} & set(ops)
    manifest = json.loads((fused / "model.json").read_text(encoding="utf-8"))
    assert manifest["files"]["model.onnx"]["bytes"] == (fused / "model.onnx").stat().st_size

    empty = [np.zeros((1, 2, 0, TINY.head_dim), np.float32)] * (2 * TINY.num_hidden_layers)
    prompt = np.array([[1, 50, 300, 7, 6000, 42, 9, 2048, 5, 77]], np.int64)
    a, b = _run(int4 / "model.onnx", prompt, empty), _run(fused / "model.onnx", prompt, empty)
    _close(a, b)
    step = np.array([[int(a[0].argmax())]], np.int64)
    _close(_run(int4 / "model.onnx", step, a[1:]), _run(fused / "model.onnx", step, b[1:]))
