"""model.json is checked at load: each file's sha256 (issue 15, item 5) and every field the runtime reads (item 11).

A damaged model.onnx must not load and answer differently with exit 0; a malformed model.json must exit 4
(model) with a message naming the key and the file, never 1 with a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import MODEL, ModelError
from assistant.llm.runtime import MiniMindOnnx, load_manifest
from tests.conftest import REPO


@pytest.fixture
def model_dir(tiny_llm: Path, tmp_path: Path) -> Path:  # noqa: F811
    copy = tmp_path / "minimind"
    shutil.copytree(tiny_llm, copy)
    return copy


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights: onnxruntime still loads it
    path.write_bytes(bytes(data))


def _edit_manifest(model_dir: Path, edit) -> Path:
    path = model_dir / "model.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return path


# These tests damage model.onnx, the blocks form of the two-form int8 export: pinned, since auto may load the
# other form on this CPU and then never reads model.onnx (tests/test_weights_choice.py).
BLOCKS = "blocks"


def _ask(model_dir: Path, cwd: Path, config: str = "") -> subprocess.CompletedProcess[str]:
    settings = "llm:\n  max_new_tokens: 4\n  threads: 1\n  greedy: true\n  weights: blocks\n"
    (cwd / "config.yaml").write_text(settings + config)
    return subprocess.run(
        [sys.executable, "-m", "assistant", "ask", "--model-dir", str(model_dir), "hello"],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_flipped_byte_is_refused_naming_the_file_and_both_hashes(model_dir: Path, tmp_path: Path) -> None:
    recorded = json.loads((model_dir / "model.json").read_text())["files"]["model.onnx"]["sha256"]
    _flip_byte(model_dir / "model.onnx")
    with pytest.raises(ModelError) as info:
        MiniMindOnnx(model_dir, threads=1, weights=BLOCKS)
    message = str(info.value)
    assert str(model_dir / "model.onnx") in message and recorded in message
    from export.manifest import sha256_file

    assert sha256_file(model_dir / "model.onnx") in message  # the actual hash too

    result = _ask(model_dir, tmp_path)
    assert result.returncode == MODEL, result.stderr
    assert "model.onnx does not match" in result.stderr and "Traceback" not in result.stderr


def test_opt_out_loads_an_edited_model(model_dir: Path, tmp_path: Path) -> None:
    _flip_byte(model_dir / "model.onnx")
    result = _ask(model_dir, tmp_path, "  verify_sha256: false\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_damaged_tokenizer_is_refused(model_dir: Path) -> None:
    with (model_dir / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ModelError, match=r"tokenizer\.json does not match"):
        MiniMindOnnx(model_dir, threads=1)


def test_unlisted_model_file_is_refused_unless_opted_out(model_dir: Path) -> None:
    _edit_manifest(model_dir, lambda m: m["files"].pop("model.onnx"))
    with pytest.raises(ModelError, match=r"lists no sha256 for model\.onnx.*llm\.verify_sha256: false"):
        MiniMindOnnx(model_dir, threads=1, weights=BLOCKS)
    MiniMindOnnx(model_dir, threads=1, verify_sha256=False, weights=BLOCKS)


def _set(*keys: str, value: object):
    def edit(manifest: dict) -> None:
        table = manifest
        for key in keys[:-1]:
            table = table[key]
        table[keys[-1]] = value

    return edit


def _drop(*keys: str):
    def edit(manifest: dict) -> None:
        table = manifest
        for key in keys[:-1]:
            table = table[key]
        del table[keys[-1]]

    return edit


MALFORMED = {
    "vocab_size -1": (_set("architecture", "vocab_size", value=-1), "architecture.vocab_size"),
    "vocab_size text": (_set("architecture", "vocab_size", value="6400"), "architecture.vocab_size"),
    "vocab_size bool": (_set("architecture", "vocab_size", value=True), "architecture.vocab_size"),
    "vocab_size huge": (_set("architecture", "vocab_size", value=10**12), "architecture.vocab_size"),
    "layers missing": (_drop("architecture", "num_hidden_layers"), "architecture.num_hidden_layers"),
    "layers 0": (_set("architecture", "num_hidden_layers", value=0), "architecture.num_hidden_layers"),
    "kv heads null": (_set("architecture", "num_key_value_heads", value=None), "architecture.num_key_value_heads"),
    "head_dim fraction": (_set("architecture", "head_dim", value=6.5), "architecture.head_dim"),
    "context list": (_set("architecture", "max_position_embeddings", value=[1]), "max_position_embeddings"),
    "architecture list": (_set("architecture", value=[]), "architecture"),
    "eos float": (_set("eos_token_id", value=2.5), "eos_token_id"),
    "eos text": (_set("eos_token_id", value="2"), "eos_token_id"),
    "eos beyond vocab": (_set("eos_token_id", value=6400), "eos_token_id"),
    "bos negative": (_set("bos_token_id", value=-1), "bos_token_id"),
    "quantization number": (_set("quantization", value=8), "quantization"),
    "tokenizer path": (_set("tokenizer", value="../../etc/passwd"), "tokenizer"),
    "files list": (_set("files", value=[]), "files"),
    "files outside": (_set("files", value={"../x": {"sha256": "0" * 64, "bytes": 1}}), "files"),
    "sha256 short": (_set("files", "model.onnx", "sha256", value="abc"), "files.model.onnx.sha256"),
    "bytes text": (_set("files", "model.onnx", "bytes", value="1"), "files.model.onnx.bytes"),
    "version true": (_set("version", value=True), "version"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_field_is_model_error_naming_key_and_file(model_dir: Path, case: str) -> None:
    edit, key = MALFORMED[case]
    path = _edit_manifest(model_dir, edit)
    with pytest.raises(ModelError) as info:
        load_manifest(model_dir)
    message = str(info.value)
    assert str(path) in message and key in message, message
    assert len(message) < 600  # a hostile value is quoted short


def test_vocab_size_that_disagrees_with_the_graph_exits_4(model_dir: Path, tmp_path: Path) -> None:
    path = _edit_manifest(model_dir, _set("architecture", "vocab_size", value=10))
    with pytest.raises(ModelError, match=r"architecture\.vocab_size' is 10 but .* produces 6400 logits"):
        MiniMindOnnx(model_dir, threads=1)
    _edit_manifest(model_dir, _set("architecture", "vocab_size", value=6400))
    for key, value in (("num_key_value_heads", 10**6), ("head_dim", 7)):
        good = json.loads(path.read_text())["architecture"][key]
        _edit_manifest(model_dir, _set("architecture", key, value=value))
        with pytest.raises(ModelError, match=rf"architecture\.{key}' is {value} but .*past_key\.0"):
            MiniMindOnnx(model_dir, threads=1)
        _edit_manifest(model_dir, _set("architecture", key, value=good))
    for edit in (_set("architecture", "vocab_size", value=-1), _set("eos_token_id", value="two")):
        edit_path = _edit_manifest(model_dir, edit)
        assert edit_path == path
        result = _ask(model_dir, tmp_path)
        assert result.returncode == MODEL, result.stderr
        assert str(path) in result.stderr and "Traceback" not in result.stderr
