"""Quantize an exported fp32 graph. Imports only onnx/onnxruntime/numpy: requantizing works without torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from assistant.exitcodes import ModelError

log = logging.getLogger(__name__)

QUANTS = ("int8", "int4", "fp32")
INT4_BLOCK = 32  # K elements sharing one scale


def quantize(src: Path, dst: Path, quant: str) -> None:
    """Write the `quant` version of the fp32 graph `src` to `dst`."""
    started = time.perf_counter()
    if quant == "int8":
        _int8(src, dst)
    elif quant == "int4":
        _int4(src, dst)
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


def _int8(src: Path, dst: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul covers every projection and lm_head (exported as its own MatMul for this reason); Gather makes
    # the embedding table int8 too, which quarters the largest remaining fp32 tensor.
    quantize_dynamic(
        model_input=str(src),
        model_output=str(dst),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        per_channel=False,
        # onnx shape inference cannot type the outputs of onnxruntime's fused (com.microsoft) operators.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def _int4(src: Path, dst: Path) -> None:
    """Weights of every constant MatMul as 4-bit blocks (MatMulNBits); the embedding table as int8."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    replaced = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        w = numpy_helper.to_array(weights[node.input[1]])  # [K, N]
        if w.ndim != 2 or w.dtype != np.float32 or w.shape[0] % INT4_BLOCK:
            continue
        packed, scales = pack_int4(w)
        k, n = w.shape
        name = node.input[1]
        graph.initializer.remove(weights.pop(name))
        graph.initializer.extend(
            [numpy_helper.from_array(packed, f"{name}_q4"), numpy_helper.from_array(scales, f"{name}_scales")]
        )
        graph.node[index].CopyFrom(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{name}_q4", f"{name}_scales"],
                list(node.output),
                name=node.name or f"MatMulNBits_{index}",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=4,
                block_size=INT4_BLOCK,
                # 4: int8 activations, the fast kernel; level 0 ran at 10-20 tokens/s on these machines.
                accuracy_level=4,
            )
        )
        replaced += 1
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if replaced == 0:
        raise ModelError(f"{src}: no MatMul with a constant weight to quantize to int4")
    staged = dst.with_name(dst.name + ".q4tmp")
    onnx.save_model(model, str(staged))
    try:
        # The embedding table (a Gather, not a MatMul) becomes int8 as in the int8 export.
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            model_input=str(staged),
            model_output=str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Gather"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        staged.unlink(missing_ok=True)
    log.info("int4: %d MatMul weights in %d-element blocks", replaced, INT4_BLOCK)


def pack_int4(w):
    """[K, N] float32 -> (uint8 [N, K/B, B/2] two 4-bit values per byte, float32 scales [N * K/B]).

    Symmetric per block of B consecutive K elements of one output column: q = round(w / scale) + 8 in 0..15,
    scale = max|w| / 7, the zero point left at MatMulNBits' default of 8. Low nibble first.
    """
    import numpy as np

    k, n = w.shape
    blocks = w.T.reshape(n, k // INT4_BLOCK, INT4_BLOCK)  # [N, K/B, B]
    scales = np.abs(blocks).max(axis=-1, keepdims=True) / 7.0
    scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
    q = (np.clip(np.rint(blocks / scales), -8, 7) + 8).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)  # [N, K/B, B/2]
    return np.ascontiguousarray(packed), scales.reshape(-1)
