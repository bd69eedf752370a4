"""torch MiniMind -> ONNX graph with the KV-cache I/O contract the runtime (assistant/) expects.

Inputs: `input_ids` int64 [1, S]; per layer i `past_key.{i}`, `past_value.{i}` float32 [1, Hkv, P, D]
(P may be 0, so one graph serves prefill and decode; positions start at P).
Outputs: `logits` float32 [1, V] (last position only), `present_key.{i}`, `present_value.{i}`
[1, Hkv, P+S, D].
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from assistant.exitcodes import ModelError
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
    """Flat-tensor wrapper: RoPE computed from positions in the graph, lm_head as its own MatMul."""

    def __init__(self, model: MiniMindForCausalLM) -> None:
        super().__init__()
        self.inner = model.model
        cfg = model.config
        d = cfg.head_dim
        # A [32768, D] table would put 16 MB of constants in the file; D/2 frequencies are enough in-graph.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # [D/2]
        # Its own transposed copy as a parameter (an initializer in ONNX): a tied weight is exported as Gemm
        # and a buffer as a Constant node, and quantize_dynamic skips both.
        lm_head_t = model.lm_head.weight.detach().t().contiguous().clone()  # [H, V]
        self.lm_head_t = nn.Parameter(lm_head_t, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, *past_flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        s = input_ids.shape[1]
        p = past[0][0].shape[2]
        positions = (torch.arange(s, device=input_ids.device) + p).float()  # [S]
        angles = positions[:, None] * self.inv_freq[None, :]  # [S, D/2]
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # [S, D]
        sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
        h, presents, _ = self.inner.run_layers(self.inner.embed_tokens(input_ids), cos, sin, past)
        logits = torch.matmul(h[:, -1, :], self.lm_head_t)  # [1, V]
        return (logits, *[t for kv in presents for t in kv])


def export_onnx(model: MiniMindForCausalLM, path: Path) -> None:
    """Write the fp32 graph to `path` (a single file: weights inline, no external data)."""
    cfg = model.config
    model = model.float().eval()
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
