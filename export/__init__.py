"""Checkpoint -> ONNX (KV cache) -> int8/int4, with parity checks and a self-describing manifest."""
