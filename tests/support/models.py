"""Models the tests build for themselves: exports of the reference MiniMind weights, a variant that says eos on
cue, and a SenseVoice-shaped recognizer with random weights (the real one cannot be downloaded here).

Plain functions; the session fixtures in tests/conftest.py call them once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from assistant.llm.runtime import MiniMindOnnx

TINY = "minimind2/minimind2-dense-tiny-random.pth"  # under ../shared/reference
TINY_REF = "minimind2/minimind2-dense-tiny-reference.npz"


def export_model_dirs(checkpoint: Path, root: Path, tokenizer: Path) -> dict[str, Path]:
    """{"fp32": dir, "int8": dir} made with the project's exporter CLI (int8 requantized without torch)."""
    from export.cli import main as export_main

    dirs = {"fp32": root / "fp32", "int8": root / "int8"}
    rc = export_main(
        [str(checkpoint), "--out", str(dirs["fp32"]), "--quant", "fp32", "--tokenizer", str(tokenizer)]
    )
    assert rc == 0, "assistant-export failed"
    rc = export_main(["requantize", str(dirs["fp32"]), "--out", str(dirs["int8"]), "--quant", "int8"])
    assert rc == 0, "assistant-export requantize failed"
    return dirs


def export_tiny_int8(checkpoint: Path, tokenizer: Path, out: Path) -> Path:
    """`assistant-export CHECKPOINT --quant int8` straight from the .pth (the path a user takes)."""
    from export.cli import main as export_main

    code = export_main([str(checkpoint), "--out", str(out), "--quant", "int8", "--tokenizer", str(tokenizer)])
    assert code == 0, "export of the tiny reference model failed"
    return out


def force_eos_after(model_dir: Path, out: Path, total_tokens: int) -> Path:
    """Copy of `model_dir` whose graph adds 1000 to the eos logit once the sequence has `total_tokens`."""
    shutil.copytree(model_dir, out)
    graph_model = onnx.load(str(out / "model.onnx"))
    graph = graph_model.graph
    vocab = json.loads((out / "model.json").read_text())["architecture"]["vocab_size"]
    old = next(o for o in graph.output if o.name == "logits")
    for node in graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
    eos_bias = np.zeros(vocab, dtype=np.float32)
    eos_bias[2] = 1000.0
    graph.initializer.extend(
        [
            helper.make_tensor("eos_bias", TensorProto.FLOAT, [vocab], eos_bias),
            helper.make_tensor("eos_from", TensorProto.INT64, [1], [total_tokens]),
        ]
    )
    if any(i.name == "total_sequence_length" for i in graph.initializer):
        # "kv_buffer": "shared": present_key.0 may be a buffer longer than the sequence; the runtime passes the
        # length as an input.
        length_nodes = [
            helper.make_node("Cast", ["total_sequence_length"], ["total64"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["total64", "shape1"], ["kv_len"]),
        ]
        graph.initializer.append(helper.make_tensor("shape1", TensorProto.INT64, [1], [1]))
    else:
        length_nodes = [helper.make_node("Shape", ["present_key.0"], ["kv_len"], start=2, end=3)]
    graph.node.extend(
        [
            *length_nodes,
            helper.make_node("GreaterOrEqual", ["kv_len", "eos_from"], ["eos_on"]),
            helper.make_node("Cast", ["eos_on"], ["eos_scale"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["eos_bias", "eos_scale"], ["eos_add"]),
            helper.make_node("Add", ["logits_raw", "eos_add"], ["logits"]),
        ]
    )
    graph.output.remove(old)
    graph.output.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, vocab]))
    onnx.save(graph_model, str(out / "model.onnx"))
    # The graph changed on purpose: record its new sha256, as the exporter would (the runtime verifies it).
    from export.manifest import sha256_file

    manifest = json.loads((out / "model.json").read_text())
    model = out / "model.onnx"
    manifest["files"]["model.onnx"] = {"sha256": sha256_file(model), "bytes": model.stat().st_size}
    (out / "model.json").write_text(json.dumps(manifest))
    return out


# ---------------------------------------------------------------------------------- a SenseVoice-shaped model

VOCAB = 64
FEAT = 80 * 7  # 80 fbank bins x lfr_window_size 7


def build_sense_voice(directory: Path, seed: int = 0) -> Path:
    """A SenseVoice-shaped model.onnx + tokens.txt in `directory`; returns the directory."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((FEAT, VOCAB)).astype(np.float32)
    # Columns summing to zero: a feature offset common to all bins (loudness) does not pick the token, so
    # frames differ and CTC emits more than one symbol.
    weight -= weight.mean(axis=0, keepdims=True)
    bias = np.zeros(VOCAB, dtype=np.float32)
    bias[0] = -2.0  # fewer blanks: the garbage text is not empty
    prompts = rng.standard_normal((16, FEAT)).astype(np.float32)
    nodes = [
        # 4 prompt frames (language, event, emotion, text_norm) in front of the features, as SenseVoice does
        helper.make_node("Gather", ["prompts", "language"], ["lang_emb"], axis=0),
        helper.make_node("Gather", ["prompts", "text_norm"], ["norm_emb"], axis=0),
        helper.make_node("Concat", ["lang_emb", "norm_emb", "norm_emb", "lang_emb"], ["prefix2d"], axis=0),
        helper.make_node("Mul", ["prefix2d", "zero"], ["prefix_scaled"]),
        helper.make_node("Unsqueeze", ["prefix_scaled", "axis0"], ["prefix"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "idx0"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "neg1", "feat"], ["prefix_shape"], axis=0),
        helper.make_node("Reshape", ["prefix", "prefix_shape"], ["prefix_b"]),
        helper.make_node("Concat", ["prefix_b", "x"], ["frames"], axis=1),
        helper.make_node("MatMul", ["frames", "weight"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
        # x_length is used (times zero) so that onnxruntime keeps it as an input, as sherpa-onnx passes it
        helper.make_node("Cast", ["x_length"], ["len_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["len_f", "axes12"], ["len_3d"]),
        helper.make_node("Mul", ["len_3d", "zero"], ["len_zero"]),
        helper.make_node("Add", ["biased", "len_zero"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(prompts, "prompts"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "idx0"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "neg1"),
        numpy_helper.from_array(np.array([FEAT], dtype=np.int64), "feat"),
    ]
    graph = helper.make_graph(
        nodes,
        "sense_voice_shaped",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", FEAT]),
            helper.make_tensor_value_info("x_length", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("language", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("text_norm", TensorProto.INT32, ["N"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T4", VOCAB])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = {
        "vocab_size": str(VOCAB), "lfr_window_size": "7", "lfr_window_shift": "6", "normalize_samples": "0",
        "with_itn": "14", "without_itn": "15", "lang_auto": "0", "lang_zh": "3", "lang_en": "4",
        "lang_yue": "7", "lang_ja": "11", "lang_ko": "12", "lang_nospeech": "13",
        "neg_mean": ",".join(["-8.0"] * FEAT), "inv_stddev": ",".join(["0.25"] * FEAT),
        "model_type": "sense_voice_ctc", "comment": "built by tests/support/models.py",
    }  # fmt: skip
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.int8.onnx"))
    symbols = ["<blank>", "<s>", "</s>"] + [f"<|tag{i}|>" for i in range(13)]
    symbols += [chr(ord("a") + i % 26) + ("" if i < 26 else str(i)) for i in range(VOCAB - len(symbols))]
    (directory / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)))
    return directory


def teacher_forced_logits(model: MiniMindOnnx, prompt: list[int], tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] at each step when `tokens` are fed one by one after the prompt."""
    sequence = model.new_sequence()
    rows = [sequence.feed(prompt).copy()]
    for token in tokens[:-1]:
        rows.append(sequence.feed([token]).copy())
    return np.stack(rows)


def random_minimind(config, seed: int):
    """A MiniMind torch model of `config` with random weights and its norms away from 1 (uniform 0.5-1.5), so that
    a converter that loads or writes a norm under the wrong name changes the logits. For the GGUF and HF-Llama
    export checks."""
    import torch

    from training.model import MiniMindForCausalLM

    torch.manual_seed(seed)
    model = MiniMindForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model
