"""torch MiniMind -> ONNX graph with the KV-cache I/O contract the runtime (assistant/) expects.

Inputs: `input_ids` int64 [1, S]; per layer i `past_key.{i}`, `past_value.{i}` float32 [1, Hkv, P, D]
(P may be 0, so one graph serves prefill and decode; positions start at P).
Outputs: `logits` float32 [1, V] (last position only), `present_key.{i}`, `present_value.{i}`
[1, Hkv, P+S, D].
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from assistant.errors import ModelError
from training.model import MiniMindConfig, MiniMindForCausalLM

log = logging.getLogger(__name__)

OPSET = 17
# Example sizes for tracing: both >= 2 so no dimension is specialised to a constant 0 or 1.
_EXAMPLE_SEQ = 3
_EXAMPLE_PAST = 2


def io_names(config: MiniMindConfig) -> tuple[list[str], list[str]]:
    layers = range(config.num_hidden_layers)
    inputs = ["input_ids"] + [f"past_{kind}.{i}" for i in layers for kind in ("key", "value")]
    outputs = ["logits"] + [f"present_{kind}.{i}" for i in layers for kind in ("key", "value")]
    return inputs, outputs


class DecoderForExport(nn.Module):
    """The model's math specialised for the graph: batch 1, flat KV tensors, shapes as constants.

    training.model's forward reads sizes off tensors (x.shape), which a trace turns into Shape/Gather/Concat
    chains around every reshape: hundreds of tiny nodes that cost more per decode step than the attention
    itself. Here every reshape is constant apart from one -1, RoPE is computed from positions with constant
    slices, and the n_rep query heads that share a kv head are stacked so the cache is never copied
    (repeat_kv would copy all of it every step). The parity check compares this against the torch model.
    """

    def __init__(self, model: MiniMindForCausalLM) -> None:
        super().__init__()
        self.model = model.model
        cfg = model.config
        self.cfg = cfg
        d = cfg.head_dim
        # A [32768, D] table would put 16 MB of constants in the file; D/2 frequencies are enough in-graph.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # [D/2]
        # Its own transposed copy as a parameter (an initializer in ONNX): a tied weight is exported as Gemm
        # and a buffer as a Constant node, and quantize_dynamic skips both.
        lm_head_t = model.lm_head.weight.detach().t().contiguous().clone()  # [H, V]
        self.lm_head_t = nn.Parameter(lm_head_t, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, *past_flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        n_rep = cfg.num_attention_heads // cfg.num_key_value_heads
        s = input_ids.shape[1]
        p = past_flat[0].shape[2]
        q_pos = torch.arange(s) + p  # [S] positions of the new tokens
        angles = q_pos.float()[:, None] * self.inv_freq[None, :]  # [S, D/2]
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # [S, D]
        sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
        allowed = torch.arange(p + s)[None, :] <= q_pos[:, None]  # [S, P+S] causal
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
        bias = bias.repeat(n_rep, 1)  # [n_rep*S, P+S]: one copy per stacked query head
        h = self.model.embed_tokens(input_ids)  # [1, S, H]
        presents = []
        for i, layer in enumerate(self.model.layers):
            attn, k, v = self._attention(layer, h, cos, sin, bias, past_flat[2 * i], past_flat[2 * i + 1])
            presents += [k, v]
            h = h + attn
            ffn = layer.mlp(layer.post_attention_layernorm(h))
            h = h + (ffn[0] if isinstance(ffn, tuple) else ffn)  # MoE also returns its aux loss
        last = self.model.norm(h[:, -1, :])  # [1, H]: only the last position's logits are returned
        return (torch.matmul(last, self.lm_head_t), *presents)  # logits [1, V]

    def _attention(self, layer, h, cos, sin, bias, past_k, past_v):
        cfg = self.cfg
        hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        attn = layer.self_attn
        x = layer.input_layernorm(h)  # [1, S, H]
        q = attn.q_proj(x).reshape(1, -1, hq, d).transpose(1, 2)  # [1, Hq, S, D]
        k = attn.k_proj(x).reshape(1, -1, hkv, d).transpose(1, 2)  # [1, Hkv, S, D]
        v = attn.v_proj(x).reshape(1, -1, hkv, d).transpose(1, 2)
        if cfg.qk_norm:  # minimind-3: RMSNorm per head over D, before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = q * cos + _rotate_half(q, d) * sin
        k = k * cos + _rotate_half(k, d) * sin
        k = torch.cat([past_k, k], dim=2)  # [1, Hkv, P+S, D]
        v = torch.cat([past_v, v], dim=2)
        # Query head g*n_rep + r uses kv head g: stacking the r's along the sequence keeps one K/V per group.
        qg = q.reshape(1, hkv, -1, d)  # [1, Hkv, n_rep*S, D]
        scores = torch.matmul(qg, k.transpose(2, 3)) * (1.0 / math.sqrt(d)) + bias  # [1, Hkv, n_rep*S, P+S]
        out = torch.matmul(scores.softmax(dim=-1), v)  # [1, Hkv, n_rep*S, D]
        out = out.reshape(1, hq, -1, d).transpose(1, 2).reshape(1, -1, hq * d)  # [1, S, H]
        return attn.o_proj(out), k, v


def _rotate_half(x: torch.Tensor, d: int) -> torch.Tensor:
    half = d // 2  # a Python int, so the slices are constants in the graph
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


GRAPHS = ("fused", "traced")


def export_onnx(model: MiniMindForCausalLM, path: Path, *, graph: str = "fused") -> str:
    """Write the fp32 graph to `path` (one file, weights inline); returns the kind of graph written.

    "fused" (dense models) is the hand-built graph of export/fused_graph.py; "traced" is the torch trace of
    DecoderForExport below, which also covers MoE.
    """
    model = model.float().eval()
    if graph == "fused" and not model.config.use_moe:
        import onnx

        from export.fused_graph import build_fused_graph

        started = time.perf_counter()
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        onnx.save_model(build_fused_graph(state, model.config), str(path))
        log.info(
            "built fused graph %s: %.1f MB in %.0f ms",
            path,
            path.stat().st_size / 1e6,
            (time.perf_counter() - started) * 1000,
        )
        return "fused"
    _trace(model, path)
    return "traced"


def _trace(model: MiniMindForCausalLM, path: Path) -> None:
    cfg = model.config
    wrapper = DecoderForExport(model).eval()
    inputs, outputs = io_names(cfg)
    kv_shape = (1, cfg.num_key_value_heads, _EXAMPLE_PAST, cfg.head_dim)
    example = (torch.randint(0, cfg.vocab_size, (1, _EXAMPLE_SEQ)),) + tuple(
        torch.zeros(kv_shape) for _ in range(2 * cfg.num_hidden_layers)
    )
    dynamic_axes = {"input_ids": {1: "seq"}}
    for name in inputs[1:]:
        dynamic_axes[name] = {2: "past"}
    for name in outputs[1:]:
        dynamic_axes[name] = {2: "total"}
    started = time.perf_counter()
    try:
        # The TorchScript exporter is deprecated, but the dynamo one needs onnxscript (not a dependency).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:
        if cfg.use_moe:
            raise ModelError(
                f"MoE export failed while tracing the routing ({exc}); MoE export is not supported yet"
            ) from exc
        raise
    log.info(
        "exported %s: %.1f MB in %.0f ms",
        path,
        path.stat().st_size / 1e6,
        (time.perf_counter() - started) * 1000,
    )
