"""assistant-export on the real dense-tiny / moe-tiny packs: round trips, refusals, torch-free paths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from export import manifest as mf  # noqa: E402
from export import parity  # noqa: E402
from export.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack(reference: Path) -> Path:
    return reference / "minimind2"


@pytest.fixture(scope="module")
def tokenizer(assets: Path) -> Path:
    return assets / "minimind-tokenizer" / "minimind2"


@pytest.fixture(scope="module")
def exported(pack: Path, tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dense-tiny exported once as fp32 and once as int8."""
    root = tmp_path_factory.mktemp("export")
    dirs = {}
    for quant in ("fp32", "int8"):
        dirs[quant] = root / quant
        argv = [str(pack / "minimind2-dense-tiny-random.pth"), "--tokenizer", str(tokenizer)]
        assert main([*argv, "--out", str(dirs[quant]), "--quant", quant]) == 0
    return dirs


def greedy_logits(session, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
    graph = parity._Graph(session)
    logits, cache = graph.step(prompt, graph.empty_cache())
    tokens, rows = [], []
    for _ in range(steps):
        rows.append(logits)
        tokens.append(int(logits.argmax()))
        logits, cache = graph.step([tokens[-1]], cache)
    return tokens, np.stack(rows)


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_manifest_describes_directory(exported: dict[str, Path], quant: str) -> None:
    directory = exported[quant]
    manifest = mf.read_manifest(directory)
    mf.verify_files(directory, manifest)
    forms = ["model.int8-dynamic.onnx"] if quant == "int8" else []  # int8: both forms (test_weights_choice.py)
    assert sorted(manifest["files"]) == [*forms, "model.onnx", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(["model.json", *manifest["files"]])
    assert manifest["quantization"] == quant
    assert manifest["graph"] == "fused"
    arch = manifest["architecture"]
    assert (arch["hidden_size"], arch["num_hidden_layers"], arch["head_dim"]) == (256, 2, 64)
    assert (manifest["bos_token_id"], manifest["eos_token_id"]) == (1, 2)
    assert manifest["parity"]["fp32_vs_torch"]["max_abs_diff"] <= 1e-4
    assert manifest["kv_buffer"] == "shared"
    assert "io" not in manifest  # the base I/O contract: total_sequence_length is optional
    if quant == "int8":
        assert manifest["weights"] == {
            "operator": "MatMulNBits",
            "bits": 8,
            "block_size": 128,
            "accuracy_level": 4,
            "embedding": "int8",
        }
        figures = manifest["parity"]["int8_vs_fp32"]
        assert figures["confident_positions"] > 0
        assert figures["top1_agreement_confident"] >= 0.98
        assert 0 <= figures["mean_kl"] < 0.1


def test_fp32_graph_reproduces_pack(exported: dict[str, Path], pack: Path) -> None:
    ref = np.load(pack / "minimind2-dense-tiny-reference.npz")
    session = parity.open_session(exported["fp32"] / "model.onnx")
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs["input_ids"] == [1, "seq"]
    assert inputs["past_key.1"] == [1, 1, "past", 64]
    # Optional (an initializer gives its default), so base-contract callers like this test leave it out.
    assert "total_sequence_length" in {i.name for i in session.get_overridable_initializers()}
    for i in range(3):
        tokens, logits = greedy_logits(session, ref[f"chat{i}_ids"].tolist(), 24)
        assert tokens == ref[f"chat{i}_greedy"].tolist()
        np.testing.assert_allclose(logits, ref[f"chat{i}_decode_logits"], atol=1e-4, rtol=0)


def test_traced_graph_reproduces_pack(pack: Path, tokenizer: Path, tmp_path: Path) -> None:
    # The standard-operator graph (no onnxruntime contrib ops), as used for MoE.
    out = tmp_path / "traced"
    argv = [str(pack / "minimind2-dense-tiny-random.pth"), "--tokenizer", str(tokenizer), "--graph", "traced"]
    assert main([*argv, "--out", str(out), "--quant", "fp32"]) == 0
    assert mf.read_manifest(out)["graph"] == "traced"
    assert "kv_buffer" not in mf.read_manifest(out)  # this graph concatenates
    ref = np.load(pack / "minimind2-dense-tiny-reference.npz")
    tokens, logits = greedy_logits(parity.open_session(out / "model.onnx"), ref["chat2_ids"].tolist(), 24)
    assert tokens == ref["chat2_greedy"].tolist()
    np.testing.assert_allclose(logits, ref["chat2_decode_logits"], atol=1e-4, rtol=0)


def test_int8_agrees_with_pack(exported: dict[str, Path], pack: Path) -> None:
    # The rule on the conformance pack: top-1 equal on >= 98% of positions where the official fp32
    # logits have a top1-top2 gap > 0.5 (random weights let greedy paths drift apart elsewhere).
    ref = np.load(pack / "minimind2-dense-tiny-reference.npz")
    session = parity.open_session(exported["int8"] / "model.onnx")
    assert (exported["int8"] / "model.onnx").stat().st_size < 0.3 * (
        exported["fp32"] / "model.onnx"
    ).stat().st_size
    official, int8 = [], []
    for i in range(3):
        prompt = ref[f"chat{i}_ids"].tolist()
        greedy = ref[f"chat{i}_greedy"].tolist()
        official.append(ref[f"chat{i}_decode_logits"])
        int8.append(parity.teacher_forced(session, prompt + greedy[:-1], len(prompt)))
    figures = parity.compare(np.concatenate(official), np.concatenate(int8))
    assert figures["confident_positions"] >= 10
    assert figures["top1_agreement_confident"] >= 0.98


def test_requantize_without_torch(exported: dict[str, Path], tmp_path: Path) -> None:
    # sys.modules["torch"] = None makes any `import torch` raise ImportError.
    code = (
        "import sys; sys.modules['torch'] = None; from export.cli import main; "
        f"sys.exit(main(['requantize', {str(exported['fp32'])!r}, '--out', {str(tmp_path / 'q')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr
    manifest = mf.read_manifest(tmp_path / "q")
    assert manifest["quantization"] == "int8"
    assert (
        manifest["parity"]["fp32_vs_torch"] == mf.read_manifest(exported["fp32"])["parity"]["fp32_vs_torch"]
    )
    assert manifest["parity"]["int8_vs_fp32"]["top1_agreement_confident"] >= 0.98


def test_verify_ok(exported: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(exported["int8"])]) == 0
    assert "ok (int8" in capsys.readouterr().out


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def test_verify_damaged_onnx(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = copy_of(exported["int8"], tmp_path)
    (directory / "model.onnx").write_bytes(b"not an onnx graph" * 100)
    assert main(["verify", str(directory)]) == 4
    assert f"{directory / 'model.onnx'} does not match its sha256" in capsys.readouterr().err


def test_corrupt_onnx_with_matching_manifest(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A graph that is damaged at export time passes sha256; loading it must still fail clearly.
    directory = copy_of(exported["fp32"], tmp_path)
    data = (directory / "model.onnx").read_bytes()
    (directory / "model.onnx").write_bytes(data[: len(data) // 3])
    manifest = mf.read_manifest(directory)
    del manifest["files"]["model.onnx"]
    mf.write_manifest(directory, manifest)
    assert main(["verify", str(directory)]) == 4
    assert f"cannot load {directory / 'model.onnx'}" in capsys.readouterr().err


def test_verify_missing_model(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = copy_of(exported["int8"], tmp_path)
    (directory / "model.onnx").unlink()
    assert main(["verify", str(directory)]) == 4
    assert f"{directory / 'model.onnx'} is missing" in capsys.readouterr().err


def test_missing_checkpoint_and_tokenizer(pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main([str(tmp_path / "absent.pth"), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "o")]) == 4
    )
    assert "tokenizer not found" in capsys.readouterr().err
    # Without --tokenizer the default is a tokenizer.json beside the checkpoint; the pack has none.
    assert main([str(pack / "minimind2-dense-tiny-random.pth"), "--out", str(tmp_path / "o")]) == 4
    assert "pass --tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_wrong_tokenizer(pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    checkpoint = str(pack / "minimind2-dense-tiny-random.pth")
    assert main([checkpoint, "--tokenizer", str(tmp_path), "--out", str(tmp_path / "o")]) == 4
    assert f"cannot read tokenizer {tmp_path / 'tokenizer.json'}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]


def test_parity_failure_leaves_nothing(pack: Path, tokenizer: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "refused"
    argv = [str(pack / "minimind2-dense-tiny-random.pth"), "--tokenizer", str(tokenizer), "--out", str(out)]
    assert main([*argv, "--quant", "fp32", "--max-abs-diff", "1e-12"]) == 4
    assert "export refused" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no DIR, no staging folder


def test_refused_requantize_keeps_existing_dir(exported: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = copy_of(exported["int8"], tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["requantize", str(exported["fp32"]), "--out", str(out), "--min-top1", "1.01"]) == 4
    assert "export refused" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_moe_export(pack: Path, tokenizer: Path, tmp_path: Path) -> None:
    manifest = json.loads((pack / "manifest.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(manifest["minimind2-moe-tiny"]["config"]))
    out = tmp_path / "moe"
    argv = [str(pack / "minimind2-moe-tiny-random.pth"), "--config", str(tmp_path / "config.json")]
    assert main([*argv, "--tokenizer", str(tokenizer), "--out", str(out), "--quant", "fp32"]) == 0
    assert mf.read_manifest(out)["graph"] == "traced"  # MoE routing is traced, not hand-built
    ref = np.load(pack / "minimind2-moe-tiny-reference.npz")
    session = parity.open_session(out / "model.onnx")
    tokens, logits = greedy_logits(session, ref["chat1_ids"].tolist(), 24)
    assert tokens == ref["chat1_greedy"].tolist()
    np.testing.assert_allclose(logits, ref["chat1_decode_logits"], atol=1e-4, rtol=0)


def test_lora_merged_before_export(pack: Path, tokenizer: Path, tmp_path: Path) -> None:
    import torch

    from training.lora import adapters, apply_lora, save_lora
    from training.weights import load_model

    checkpoint = pack / "minimind2-dense-tiny-random.pth"
    model, _ = load_model(checkpoint)
    apply_lora(model, rank=4, alpha=8.0, targets=("q_proj", "down_proj"))
    torch.manual_seed(0)
    for lora in adapters(model).values():
        torch.nn.init.normal_(lora.B, std=0.05)  # a trained adapter: B is no longer zero
    save_lora(model, tmp_path / "adapter.pt")
    ids = [1, 85, 300, 2]
    with torch.no_grad():
        adapted = model(torch.tensor([ids])).logits[0, -1].numpy()
        base = load_model(checkpoint)[0](torch.tensor([ids])).logits[0, -1].numpy()
    assert np.abs(adapted - base).max() > 0.01
    out = tmp_path / "lora"
    argv = [str(checkpoint), "--lora", str(tmp_path / "adapter.pt"), "--tokenizer", str(tokenizer)]
    assert main([*argv, "--out", str(out), "--quant", "fp32"]) == 0
    graph = parity._Graph(parity.open_session(out / "model.onnx"))
    logits, _ = graph.step(ids, graph.empty_cache())
    np.testing.assert_allclose(logits, adapted, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("bits", "block"), [(8, 128), (8, 32), (4, 32)])
def test_blocks_match_matmulnbits(bits: int, block: int) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import pack_blocks

    rng = np.random.default_rng(0)
    k, n = 4 * block, 48
    w = rng.normal(0, 0.05, (k, n)).astype(np.float32)
    x = rng.normal(0, 1, (1, 3, k)).astype(np.float32)
    packed, scales = pack_blocks(w, bits=bits, block=block)
    assert packed.shape == (n, k // block, block * bits // 8)
    if bits == 4:
        codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(n, k // block, block)  # low nibble first
    else:
        codes = packed
    values = codes.astype(np.float32) - (1 << (bits - 1))  # MatMulNBits' default zero point
    dequantized = (values * scales.reshape(n, -1, 1)).reshape(n, k).T
    assert np.abs(dequantized - w).max() <= scales.max() / 2 + 1e-7  # rounding error only
    node = helper.make_node(
        "MatMulNBits",
        ["x", "b", "s"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        accuracy_level=0,  # fp32 compute: checks the layout, not the int8 activation rounding
    )
    graph = helper.make_graph(
        [node],
        "blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, n])],
        initializer=[numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ dequantized, atol=1e-5)


def test_int8_dynamic_requantize(exported: dict[str, Path], tmp_path: Path) -> None:
    # The previous int8 format, kept for CPUs without a fast 8-bit MatMulNBits kernel.
    import onnx

    out = tmp_path / "dynamic"
    assert main(["requantize", str(exported["fp32"]), "--out", str(out), "--quant", "int8-dynamic"]) == 0
    manifest = mf.read_manifest(out)
    assert manifest["weights"]["operator"] == "DynamicQuantizeMatMul"
    assert manifest["parity"]["int8-dynamic_vs_fp32"]["top1_agreement_confident"] >= 0.98
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulNBits" not in ops
    assert {"DynamicQuantizeMatMul", "MatMulInteger"} & ops


def test_int4_requantize_records_parity(exported: dict[str, Path], tmp_path: Path) -> None:
    # Random weights lose too much at 4 bits for the 98% rule; the figures are recorded either way.
    out = tmp_path / "int4"
    assert (
        main(["requantize", str(exported["fp32"]), "--out", str(out), "--quant", "int4", "--min-top1", "0"])
        == 0
    )
    manifest = mf.read_manifest(out)
    assert manifest["quantization"] == "int4"
    assert 0 <= manifest["parity"]["int4_vs_fp32"]["top1_agreement_all"] <= 1
    assert (out / "model.onnx").stat().st_size < (exported["int8"] / "model.onnx").stat().st_size
    # Each weight gets the largest of INT4_BLOCKS that divides its K (128 first: bench/matmulnbits.py).
    import onnx

    from bench.matmulnbits import kernel_session
    from export.quantize import INT4_BLOCKS

    nodes = [n for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "MatMulNBits"]
    for node in nodes:
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == 4
        assert attrs["block_size"] == next(b for b in INT4_BLOCKS if attrs["K"] % b == 0)
    # bench/matmulnbits.py runs exactly those kernels, on one-token inputs.
    session, feed, count = kernel_session(out / "model.onnx", threads=1)
    assert count == len(nodes) > 0
    assert all(o.shape[:2] == (1, 1) for o in session.run(None, feed))
