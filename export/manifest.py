"""model.json: the self-description of an exported LLM directory (the contract with assistant/)."""

from __future__ import annotations

import json
from pathlib import Path

from assistant.errors import ModelError
from assistant.llm.runtime import MANIFEST, read_manifest_json
from assistant.llm.runtime import MANIFEST_FORMAT as FORMAT
from assistant.llm.runtime import MANIFEST_VERSION as VERSION
from assistant.models.fetch import sha256_file


def build_manifest(
    directory: Path,
    *,
    architecture: dict,
    quantization: str,
    parity: dict,
    source: str,
    graph: str,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    kv_buffer: str | None = None,
    weights: dict | None = None,
    generation: str = "minimind2",
    forms: dict | None = None,
) -> dict:
    """Manifest for the files now in `directory` (everything but model.json itself).

    `kv_buffer` "shared": the graph also takes the optional input total_sequence_length, so past and present
    may share one preallocated buffer (export/fused_graph.py); None leaves the key out. `weights` describes
    the quantized weight format (of model.onnx); `forms` the int8 forms of a two-form export. There is no
    "io" key: both graphs keep the base I/O contract. `generation`
    ("minimind2" or "minimind3") names the model and its chat template ("chat_template"): the runtime refuses a
    tokenizer of the other generation.
    """
    from assistant.llm.tokenizer import GENERATIONS

    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "quantization": quantization,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "tokenizer": "tokenizer.json",
        "generation": generation,
        "chat_template": GENERATIONS[generation],
        "model": "model.onnx",
        # "fused" graphs use onnxruntime contrib operators (com.microsoft); the I/O contract is the same.
        "graph": graph,
        "source": source,
        "files": files,
        "parity": parity,
    }
    if kv_buffer is not None:
        manifest["kv_buffer"] = kv_buffer
    if weights is not None:
        manifest["weights"] = weights
    if forms is not None:
        # Both int8 forms (export/forms.py): the runtime loads one, chosen per CPU; "weights" and "model"
        # describe model.onnx, the form an older runtime loads.
        manifest["forms"] = forms
    return manifest



def requantized_manifest(
    directory: Path, fp32: dict, source_dir: Path, *, quantization: str, parity: dict, weights: dict | None,
    forms: dict | None = None,
) -> dict:
    """Manifest for a quantized copy of the fp32 export `source_dir` (its model.json: `fp32`), now in
    `directory`: architecture, tokens, graph and generation carried over from the fp32 one."""
    return build_manifest(
        directory,
        architecture=fp32["architecture"],
        quantization=quantization,
        parity=parity,
        source=fp32.get("source", source_dir.name),
        graph=fp32.get("graph", "traced"),
        bos_token_id=fp32["bos_token_id"],
        eos_token_id=fp32["eos_token_id"],
        kv_buffer=fp32.get("kv_buffer"),
        weights=weights,
        generation=fp32.get("generation", "minimind2"),
        forms=forms,
    )

def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path} not found: {directory} is not an exported MiniMind directory")
    return read_manifest_json(path)


def verify_files(directory: Path, manifest: dict) -> None:
    """Every listed file exists with its recorded size and sha256; else ModelError naming it."""
    for name, entry in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path} is missing (listed in {directory / MANIFEST}); re-export the model")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ModelError(
                f"{path} does not match its sha256 in {directory / MANIFEST}: the file is damaged"
            )
