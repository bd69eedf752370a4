"""bench/rope_table.py: the fused graph with RoPE cos/sin as constant tables computes what the original computes.

The experiment of BENCHMARKS.md ("onnxruntime-genai's model builder") times a copy of an export with the
builder's RoPE form; this checks the copy is the same model: logits and present KV of a prefill and of a decode
step after it, fp32, against the unedited graph.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is in the export extra")
torch = pytest.importorskip("torch", reason="torch is in the export extra")
ort = pytest.importorskip("onnxruntime")

from bench.rope_table import with_rope_table  # noqa: E402
from export.fused_graph import build_fused_graph  # noqa: E402
from training.model import MiniMindConfig, MiniMindForCausalLM  # noqa: E402

TINY = MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _run(model, ids: np.ndarray, past: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids}
    for i in range(TINY.num_hidden_layers):
        feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = past[2 * i], past[2 * i + 1]
    return session.run(None, feeds)


def test_rope_table_graph_matches_the_computed_one():
    torch.manual_seed(7)
    state = {k: v.numpy() for k, v in MiniMindForCausalLM(TINY).state_dict().items()}
    original = build_fused_graph(state, TINY)
    tabled = build_fused_graph(state, TINY)
    removed = with_rope_table(tabled, 64)
    assert sorted(removed) == sorted(["Range", "Cast", "Unsqueeze", "Mul", "Cos", "Sin"])
    assert not {"Cos", "Sin", "Range"} & {n.op_type for n in tabled.graph.node}
    empty = [np.zeros((1, 2, 0, TINY.head_dim), np.float32)] * (2 * TINY.num_hidden_layers)
    prompt = np.array([[1, 50, 300, 7, 6000, 42, 9, 2048, 5, 77]], np.int64)
    a, b = _run(original, prompt, empty), _run(tabled, prompt, empty)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)
    step = np.array([[int(a[0].argmax())]], np.int64)  # a decode step at position 10 reads rows past the prompt
    for x, y in zip(_run(original, step, a[1:]), _run(tabled, step, b[1:]), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)
