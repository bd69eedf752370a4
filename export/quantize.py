"""Quantize an exported fp32 graph. Imports only onnx/onnxruntime/numpy: requantizing works without torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from assistant.errors import ModelError

log = logging.getLogger(__name__)

# int8-dynamic: the previous int8 format (quantize_dynamic: per-tensor int8 weights, DynamicQuantizeMatMul),
# kept for CPUs where onnxruntime has no fast 8-bit MatMulNBits kernel (its ARM64 one needs the dot-product
# extension, which e.g. the Raspberry Pi 4's Cortex-A72 lacks: measure with bench/llm.py --extra).
# int8: both int8 forms in one export, the runtime picks per CPU (export/forms.py, assistant/llm/weights.py);
# int8-blocks / int8-dynamic: one of them alone.
QUANTS = ("int8", "int8-blocks", "int8-dynamic", "int4", "fp32")
# K elements sharing one scale at 4 bits, the first that divides K. 128, the group size GPTQ and AWQ use, not
# llama.cpp Q4_0's 32: onnxruntime's 4-bit kernel on an AVX-512 VNNI EPYC ran 1.2-1.6x faster at 128 than at 64
# and 64 1.15-1.4x faster than 32 (bench/matmulnbits.py; whole decode steps in bench/genai_ab.py). On a trained
# MiniMind2-Small all three pass the export's parity rule on held-out chats; mean KL to fp32 0.0155 (128),
# 0.0148 (64), 0.0123 (32) on general chats (BENCHMARKS.md, "int4 block size", "int4 in blocks of 128").
INT4_BLOCKS = (128, 64, 32, 16)
# At 8 bits the rounding error is small enough that one scale per 128 K elements costs little accuracy, and
# fewer scales decode faster: 128 ran 1.15-1.3x the speed of 32 here (BENCHMARKS.md, LLM section).
INT8_BLOCKS = (128, 64, 32, 16)  # the first that divides K is used
# 4: the activations are quantized to int8 per block and the products summed in int8 (VNNI). Level 0 (fp32
# compute) ran at 10-20 tokens/s on these machines.
ACCURACY_LEVEL = 4


def quantize(
    src: Path, dst: Path, quant: str, *, block_size: int | None = None, accuracy_level: int = ACCURACY_LEVEL
) -> dict:
    """Write the `quant` version of the fp32 graph `src` to `dst`; return a description of the weight format
    for model.json.

    block_size and accuracy_level (int8/int4 blocks only) override the defaults above, for experiments
    (bench/llm_variants.py); a block size that does not divide a MatMul's K leaves that MatMul per tensor."""
    started = time.perf_counter()
    if quant in ("int8", "int8-blocks"):  # quantize() writes one file: "int8" is the blocks form here
        blocks = (block_size,) if block_size else INT8_BLOCKS
        described = _blockwise(src, dst, bits=8, blocks=blocks, accuracy_level=accuracy_level)
    elif quant == "int4":
        blocks = (block_size,) if block_size else INT4_BLOCKS
        described = _blockwise(src, dst, bits=4, blocks=blocks, accuracy_level=accuracy_level)
    elif quant == "int8-dynamic":
        described = _dynamic(src, dst)
    else:
        raise ModelError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    log.info(
        "quantized %s -> %s (%s): %.1f MB -> %.1f MB in %.0f ms",
        src.name,
        dst.name,
        quant,
        src.stat().st_size / 1e6,
        dst.stat().st_size / 1e6,
        (time.perf_counter() - started) * 1000,
    )
    return described


def _blockwise(src: Path, dst: Path, *, bits: int, blocks: tuple[int, ...], accuracy_level: int) -> dict:
    """Weights of every constant MatMul as `bits`-bit blocks (MatMulNBits); the embedding table as int8.

    MatMulNBits (one scale per block of K) replaced quantize_dynamic's MatMulInteger/DynamicQuantizeMatMul
    (one scale per tensor) for int8: decode ran 1.2-1.3x faster and the blocks keep the logits closer to fp32.
    A MatMul whose K no block size divides is left to quantize_dynamic.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    replaced = 0
    used: set[int] = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        w = numpy_helper.to_array(weights[node.input[1]])  # [K, N]
        block = next((b for b in blocks if w.ndim == 2 and w.shape[0] % b == 0), None)
        if block is None or w.dtype != np.float32:
            continue
        packed, scales = pack_blocks(w, bits=bits, block=block)
        k, n = w.shape
        name = node.input[1]
        graph.initializer.remove(weights.pop(name))
        graph.initializer.extend(
            [numpy_helper.from_array(packed, f"{name}_q{bits}"), numpy_helper.from_array(scales, f"{name}_scales")]
        )
        graph.node[index].CopyFrom(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{name}_q{bits}", f"{name}_scales"],
                list(node.output),
                name=node.name or f"MatMulNBits_{index}",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=bits,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        )
        replaced += 1
        used.add(block)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if replaced == 0:
        raise ModelError(f"{src}: no MatMul with a constant weight to quantize to {bits} bits")
    staged = dst.with_name(dst.name + ".qtmp")
    onnx.save_model(model, str(staged))
    try:
        # The embedding table (a Gather, not a MatMul) becomes int8 per tensor: a lookup reads one row a
        # token, so its format does not matter for speed, only for size. Leftover MatMuls go the same way.
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            model_input=str(staged),
            model_output=str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            # onnx shape inference cannot type the outputs of onnxruntime's fused (com.microsoft) operators.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        staged.unlink(missing_ok=True)
    log.info("%d-bit: %d MatMul weights in blocks of %s", bits, replaced, sorted(used))
    return {
        "operator": "MatMulNBits",
        "bits": bits,
        "block_size": max(used),
        "accuracy_level": accuracy_level,
        "embedding": "int8",
    }


def _dynamic(src: Path, dst: Path) -> dict:
    """Every constant MatMul and the embedding as per-tensor int8 (quantize_dynamic)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(src),
        model_output=str(dst),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        per_channel=False,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    return {"operator": "DynamicQuantizeMatMul", "bits": 8, "block_size": None, "embedding": "int8"}


def pack_blocks(w, *, bits: int, block: int):
    """[K, N] float32 -> (uint8 [N, K/B, B*bits/8], float32 scales [N * K/B]) in MatMulNBits' layout.

    Symmetric per block of B consecutive K elements of one output column: q = round(w / scale) + 2^(bits-1),
    scale = max|w| / (2^(bits-1) - 1), the zero point left at MatMulNBits' default of 2^(bits-1). At 4 bits
    two values share a byte, low nibble first.
    """
    import numpy as np

    k, n = w.shape
    half = 1 << (bits - 1)
    blocks = w.T.reshape(n, k // block, block)  # [N, K/B, B]
    scales = np.abs(blocks).max(axis=-1, keepdims=True) / (half - 1)
    scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
    q = (np.clip(np.rint(blocks / scales), -half, half - 1) + half).astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)  # [N, K/B, B/2]
    return np.ascontiguousarray(q), scales.reshape(-1)
