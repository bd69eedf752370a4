"""Quantize an exported fp32 graph. Imports only onnx/onnxruntime/numpy: requantizing works without torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from assistant.exitcodes import ModelError

log = logging.getLogger(__name__)

QUANTS = ("int8", "int4", "fp32")


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
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise ModelError(
            f"int4 quantization is not supported by this onnxruntime ({exc}); use --quant int8"
        ) from exc
    model = onnx.load(str(src))
    # accuracy_level 4 (int8 activations) is the fast kernel; level 0 ran at 10-20 tokens/s on these machines.
    quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    onnx.save_model(quantizer.model.model, str(dst))
