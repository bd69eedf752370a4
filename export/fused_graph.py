"""A hand-built ONNX graph of dense MiniMind2 / minimind-3 using onnxruntime's fused CPU operators (com.microsoft).

Each layer is a handful of nodes instead of dozens: GroupQueryAttention takes the packed q/k/v projection and
does RoPE, the KV append, GQA and the causal mask in one kernel; SkipSimplifiedLayerNormalization fuses each
residual add with the next RMSNorm; q/k/v and gate/up are one MatMul each. minimind-3's per-head q/k RMSNorm
splits the q/k/v output and normalises q and k as [1, S, heads, D] with SimplifiedLayerNormalization before
GroupQueryAttention (which applies RoPE after it, as the official code does). Built from numpy weights, so no
tracing is involved; the export parity check compares it with the torch model like any other graph. Dense
only: MoE keeps the traced graph.

I/O: the base contract of export/onnx_graph.py (input_ids [1, S], past_key.{i} / past_value.{i}
[1, Hkv, P, D] in; logits [1, V], present_key.{i} / present_value.{i} out), plus one optional input,
`total_sequence_length` (int32 scalar: tokens valid after this call, P + S). Left out it defaults to 0, which
means "P + S from the shapes", so every caller of the base contract runs this graph unchanged. Given, the
past tensors may be a buffer longer than the valid tokens: GroupQueryAttention reads only the first
total - S positions of the past and writes the new ones after them, so a caller that binds one preallocated
[1, Hkv, L, D] buffer as both past_X.{i} and present_X.{i} (L >= total) gets the KV cache updated in place,
with no per-step concat or allocation (model.json "kv_buffer": "shared").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
KV_BUFFER = "shared"  # model.json "kv_buffer" of this graph
TOTAL = "total_sequence_length"


def build_fused_graph(state: dict[str, np.ndarray], cfg) -> onnx.ModelProto:
    """`state`: fp32 numpy arrays under the official key names; `cfg`: a MiniMindConfig."""
    if cfg.use_moe:
        raise ValueError("the fused graph is built for dense models only")
    hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    eps = float(cfg.rms_norm_eps)
    b = _Builder()

    # Sizes the attention kernel wants: total length P + S and seqlens_k = total - 1 as [1], both int32.
    # total_sequence_length when given (> 0), else P + S from the shapes (the past is then exactly P long).
    s_len = b.node("Gather", [b.node("Shape", ["input_ids"]), b.const("one", np.array(1, np.int64))])
    p_len = b.node("Gather", [b.node("Shape", ["past_key.0"]), b.const("two", np.array(2, np.int64))])
    from_shapes = b.node("Add", [p_len, s_len])  # int64 scalar
    given = b.node("Cast", [TOTAL], to=TensorProto.INT64)
    is_given = b.node("Greater", [given, b.const("zero", np.array(0, np.int64))])
    total64 = b.node("Where", [is_given, given, from_shapes])
    total = b.node("Cast", [total64], to=TensorProto.INT32)
    last_index = b.node("Sub", [total, b.const("one32", np.array(1, np.int32))])
    seqlens_k = b.node("Reshape", [last_index, b.const("shape1", np.array([1], np.int64))])  # [1]

    # cos/sin [P+S, D/2] for positions 0..P+S-1, computed per call: a few thousand cos/sin per step instead
    # of a 32768-row table in the file.
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2)[: d // 2].astype(np.float32) / d))
    steps = ["zero", total64, b.const("step", np.array(1, np.int64))]
    positions = b.node("Cast", [b.node("Range", steps)], to=TensorProto.FLOAT)  # [P+S]
    column = b.node("Unsqueeze", [positions, b.const("axis1", np.array([1], np.int64))])  # [P+S, 1]
    angles = b.node("Mul", [column, b.const("inv_freq", inv_freq[None, :].astype(np.float32))])
    cos, sin = b.node("Cos", [angles]), b.node("Sin", [angles])

    embed = b.const("embed_tokens", state["model.embed_tokens.weight"])
    residual = b.node("Gather", [embed, "input_ids"])  # [1, S, H]
    gamma = b.const("norm_in.0", state[_key(0, "input_layernorm")])
    normed = b.node("SimplifiedLayerNormalization", [residual, gamma], axis=-1, epsilon=eps, stash_type=1)
    for i in range(cfg.num_hidden_layers):
        # Attention: one MatMul for q, k and v, passed packed (no Split); GroupQueryAttention applies RoPE,
        # writes k/v into the cache after its first total - S positions and attends causally.
        w_qkv = np.concatenate([state[_key(i, f"self_attn.{n}_proj")] for n in "qkv"], axis=0).T
        qkv = b.node("MatMul", [normed, b.const(f"qkv.{i}", w_qkv)])  # [1, S, (Hq + 2 Hkv) D]
        q_k_v = [qkv, "", ""]
        if cfg.qk_norm:
            q_k_v = _qk_norm(b, state, cfg, i, qkv)
        attn, _, _ = b.node(
            "GroupQueryAttention",
            [*q_k_v, f"past_key.{i}", f"past_value.{i}", seqlens_k, total, cos, sin],
            outputs=[None, f"present_key.{i}", f"present_value.{i}"],
            domain=MS,
            num_heads=hq,
            kv_num_heads=hkv,
            do_rotary=1,
            rotary_interleaved=0,  # MiniMind2's rotate_half layout
        )  # [1, S, Hq D]
        o = b.node("MatMul", [attn, b.const(f"o.{i}", state[_key(i, "self_attn.o_proj")].T)])
        # residual + o and the RMSNorm of that sum in one kernel; outputs: normed, mean, inv_std, sum.
        gamma = b.const(f"norm_post.{i}", state[_key(i, "post_attention_layernorm")])
        normed, _, _, residual = b.node(
            "SkipSimplifiedLayerNormalization",
            [o, residual, gamma],
            outputs=[None, "", "", None],
            domain=MS,
            epsilon=eps,
        )
        # SwiGLU: one MatMul for gate and up.
        w_gu = np.concatenate([state[_key(i, "mlp.gate_proj")], state[_key(i, "mlp.up_proj")]], axis=0).T
        gate_up = b.node("MatMul", [normed, b.const(f"gate_up.{i}", w_gu)])  # [1, S, 2F]
        widths = b.const(f"gu_split.{i}", np.array([cfg.intermediate_size] * 2, np.int64))
        gate, up = b.node("Split", [gate_up, widths], outputs=2, axis=-1)
        act = b.node("Mul", [b.node("Mul", [gate, b.node("Sigmoid", [gate])]), up])  # silu(gate) * up
        down = b.node("MatMul", [act, b.const(f"down.{i}", state[_key(i, "mlp.down_proj")].T)])
        # The next layer's input norm (or the final norm) fused with this residual add.
        last = i == cfg.num_hidden_layers - 1
        next_gamma = state["model.norm.weight"] if last else state[_key(i + 1, "input_layernorm")]
        gamma = b.const(f"norm_in.{i + 1}", next_gamma)
        normed, _, _, residual = b.node(
            "SkipSimplifiedLayerNormalization",
            [down, residual, gamma],
            outputs=[None, "", "", None],
            domain=MS,
            epsilon=eps,
        )
    final = b.node("Gather", [normed, b.const("last", np.array(-1, np.int64))], axis=1)  # [1, H]
    # Its own MatMul (not the Gather's table) so the quantizer packs it like the other projections.
    lm_head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    b.node("MatMul", [final, b.const("lm_head", lm_head.T)], outputs=["logits"])  # [1, V]

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"]),
        helper.make_tensor_value_info(TOTAL, TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, cfg.vocab_size])]
    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            past = helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT, [1, hkv, "past", d])
            present = helper.make_tensor_value_info(
                f"present_{kind}.{i}", TensorProto.FLOAT, [1, hkv, "total", d]
            )
            inputs.append(past)
            outputs.append(present)
    # An initializer named like an input is that input's default (IR >= 4): callers may leave it out.
    b.const(TOTAL, np.array(0, np.int32))
    graph = helper.make_graph(b.nodes, f"{cfg.generation}_fused", inputs, outputs, initializer=b.initializers)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edge-assistant")
    model.ir_version = 8  # readable by onnxruntime builds back to 1.14
    return model


def _qk_norm(b: _Builder, state: dict[str, np.ndarray], cfg, i: int, qkv: str) -> list[str]:
    """minimind-3: split q/k/v, RMSNorm q and k per head over D (RoPE comes after, in the attention kernel)."""
    hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    widths = b.const(f"qkv_split.{i}", np.array([hq * d, hkv * d, hkv * d], np.int64))
    q, k, v = b.node("Split", [qkv, widths], outputs=3, axis=-1)
    normed = []
    for name, x, heads in (("q_norm", q, hq), ("k_norm", k, hkv)):
        per_head = b.node("Reshape", [x, b.const(f"{name}_heads.{i}", np.array([1, -1, heads, d], np.int64))])
        gamma = b.const(f"{name}.{i}", state[_key(i, f"self_attn.{name}")])
        y = b.node(
            "SimplifiedLayerNormalization", [per_head, gamma], axis=-1, epsilon=float(cfg.rms_norm_eps), stash_type=1
        )
        normed.append(b.node("Reshape", [y, b.const(f"{name}_flat.{i}", np.array([1, -1, heads * d], np.int64))]))
    return [normed[0], normed[1], v]


def _key(layer: int, name: str) -> str:
    return f"model.layers.{layer}.{name}.weight"


class _Builder:
    """Collects nodes and initializers, naming every intermediate tensor."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        # copy(order="C"), not ascontiguousarray: the latter turns 0-d scalars into shape [1].
        self.initializers.append(numpy_helper.from_array(value.copy(order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], *, outputs=1, domain: str = "", **attrs):
        self._count += 1
        names = [None] * outputs if isinstance(outputs, int) else list(outputs)
        names = [n if n is not None else f"{op}_{self._count}_{j}" for j, n in enumerate(names)]
        self.nodes.append(
            helper.make_node(op, inputs, names, name=f"{op}_{self._count}", domain=domain, **attrs)
        )
        return names[0] if len(names) == 1 else names
