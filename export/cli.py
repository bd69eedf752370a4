"""`assistant-export`: checkpoint -> exported MiniMind directory (model.onnx, tokenizer, model.json).

    assistant-export CHECKPOINT --out DIR [--quant int8|int8-blocks|int8-dynamic|int4|fp32] [--tokenizer PATH]
                     [--lora ADAPTER]
    assistant-export requantize FP32_DIR --out DIR [--quant int8|int8-blocks|int8-dynamic|int4] (without torch)
    assistant-export verify DIR                                            (sha256 + a run of each form)
    assistant-export measure DIR       (time the int8 forms on this CPU; recorded in DIR/model.json "speed")

--quant int8 (the default) writes both int8 weight forms, the 8-bit MatMulNBits blocks and per-tensor dynamic
int8, each checked for parity separately, and times them on this CPU; the runtime loads one of them, chosen per
CPU (export/forms.py, assistant/llm/weights.py). int8-blocks / int8-dynamic write one form alone.

A directory is built in a hidden staging folder beside DIR and moved into place only after parity passed, so
a refused or failed export leaves DIR as it was. torch is imported only by the checkpoint export.

Dense models get the hand-built graph of export/fused_graph.py (onnxruntime's fused operators) unless
`--graph traced` asks for the standard-operator trace of export/onnx_graph.py, which MoE models always use.
model.json records which one ("graph"). Both keep the base I/O contract; the fused graph also takes an
optional total_sequence_length input that lets the runtime keep the KV cache in preallocated buffers updated
in place (model.json "kv_buffer": "shared"; see export/fused_graph.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from assistant.errors import FAILURE, INTERRUPTED, AssistantError, ModelError
from export import manifest as mf
from export import parity
from export.forms import measure_forms, write_int8_forms
from export.quantize import QUANTS, quantize

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # onnxruntime's quantizer logs every skipped node at INFO on the root logger: keep only ours at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export", "training"):
        logging.getLogger(name).setLevel(logging.INFO)
    parser = _parser(argv[0] if argv else "")
    args = parser.parse_args(argv[1:] if argv and argv[0] in ("requantize", "verify", "measure") else argv)
    try:
        args.run(args)
        return 0
    except AssistantError as exc:
        print(f"assistant-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception:  # noqa: BLE001 - a bug: log it with its traceback
        log.exception("unexpected error")
        return FAILURE


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "verify":
        p = argparse.ArgumentParser(prog="assistant-export verify", description="check an exported directory")
        p.add_argument("directory", type=Path)
        p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its default)")
        p.set_defaults(run=run_verify)
        return p
    if command == "measure":
        p = argparse.ArgumentParser(
            prog="assistant-export measure",
            description="time the int8 forms of an export on this CPU and record it in its model.json",
        )
        p.add_argument("directory", type=Path)
        p.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default %(default)s)")
        p.set_defaults(run=run_measure)
        return p
    if command == "requantize":
        p = argparse.ArgumentParser(
            prog="assistant-export requantize",
            description="quantize an exported fp32 directory (no torch needed)",
        )
        p.add_argument("source", type=Path, help="directory exported with --quant fp32")
        p.set_defaults(run=run_requantize)
    else:
        p = argparse.ArgumentParser(
            prog="assistant-export",
            description="export a MiniMind2 or minimind-3 checkpoint to ONNX with a KV cache "
            "(also: requantize, verify)",
        )
        p.add_argument("checkpoint", type=Path, help=".pth state dict or transformers-format directory")
        p.add_argument(
            "--tokenizer", type=Path, help="tokenizer.json or its directory (default: beside CHECKPOINT)"
        )
        p.add_argument("--config", type=Path, help="config.json for a .pth whose head size is not 64")
        p.add_argument("--lora", type=Path, help="LoRA adapter to merge into the weights before export")
        p.add_argument(
            "--graph",
            choices=("fused", "traced"),
            default="fused",
            help="fused: onnxruntime's fused attention/norm operators (dense models; the default); "
            "traced: a torch trace using standard ONNX operators only (MoE always uses it)",
        )
        p.add_argument(
            "--max-abs-diff",
            type=float,
            default=parity.Tolerances.fp32_max_abs,
            help="fp32 ONNX vs torch tolerance (default %(default)g)",
        )
        p.set_defaults(run=run_export)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--quant",
        choices=QUANTS,
        default="int8",
        help="weight format (default %(default)s: both int8 forms, the runtime picks per CPU; int8-blocks: "
        "8-bit MatMulNBits blocks alone; int8-dynamic: per-tensor int8 alone, for CPUs without a fast 8-bit "
        "MatMulNBits kernel)",
    )
    p.add_argument(
        "--min-top1",
        type=float,
        default=parity.Tolerances.min_top1,
        help="quantized vs fp32 top-1 agreement, confident positions (default %(default)g)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: default)"
    )
    return p


def run_export(args: argparse.Namespace) -> None:
    tokenizer_files = find_tokenizer(args.tokenizer, args.checkpoint)
    import torch

    from export.fused_graph import KV_BUFFER
    from export.onnx_graph import export_onnx
    from training.weights import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    config = None
    if args.config:
        from training.weights import read_config

        config = read_config(args.config)
    model, config = load_model(args.checkpoint, config=config)
    check_tokenizer(tokenizer_files[0], config.vocab_size, config.eos_token_id, config.generation, args.checkpoint)
    if args.lora:
        merge_lora(model, args.lora)
    tol = parity.Tolerances(fp32_max_abs=args.max_abs_diff, min_top1=args.min_top1)
    with staging(args.out) as stage:
        fp32_path = stage / "model.onnx" if args.quant == "fp32" else stage / "model.fp32.onnx"
        graph = export_onnx(model, fp32_path, graph=args.graph)
        copy_tokenizer(tokenizer_files, stage)
        weights = None
        fp32 = parity.open_session(fp32_path, args.threads)
        sequences = parity.build_sequences(
            fp32, parity.chat_prompts(stage / "tokenizer.json"), config.eos_token_id
        )
        figures = {"fp32_vs_torch": parity.check_fp32(model, fp32, sequences, tol)}
        forms = None
        if args.quant == "int8":
            forms, quantized_figures, weights = write_int8_forms(fp32_path, stage, fp32, sequences, tol, args.threads)
            figures.update(quantized_figures)
            del fp32
            fp32_path.unlink()
        elif args.quant != "fp32":
            weights = quantize(fp32_path, stage / "model.onnx", args.quant)
            quantized = parity.open_session(stage / "model.onnx", args.threads)
            figures[f"{args.quant}_vs_fp32"] = parity.check_quantized(
                fp32, quantized, sequences, args.quant, tol
            )
            del fp32, quantized
            fp32_path.unlink()
        architecture = {**config.to_dict(), "head_dim": config.head_dim}
        manifest = mf.build_manifest(
            stage,
            architecture=architecture,
            quantization=args.quant,
            parity=figures,
            source=args.checkpoint.name,
            graph=graph,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            kv_buffer=KV_BUFFER if graph == "fused" else None,
            weights=weights,
            generation=config.generation,
            forms=forms,
        )
        write_and_measure(stage, manifest, args.threads)
    log.info("wrote %s (%s, %s)", args.out, args.quant, config.label)


def run_requantize(args: argparse.Namespace) -> None:
    source: Path = args.source
    manifest = mf.read_manifest(source)
    mf.verify_files(source, manifest)
    if manifest["quantization"] != "fp32":
        raise ModelError(
            f"{source} holds a {manifest['quantization']} model; requantize needs an fp32 export"
        )
    if args.quant == "fp32":
        raise ModelError("requantize to fp32 is a copy: choose --quant int8 or int4")
    tol = parity.Tolerances(min_top1=args.min_top1)
    with staging(args.out) as stage:
        copy_tokenizer([source / n for n in TOKENIZER_FILES if (source / n).is_file()], stage)
        fp32 = parity.open_session(source / "model.onnx", args.threads)
        sequences = parity.build_sequences(
            fp32, parity.chat_prompts(stage / "tokenizer.json"), manifest["eos_token_id"]
        )
        figures = dict(manifest.get("parity", {}))
        forms = None
        if args.quant == "int8":
            forms, quantized_figures, weights = write_int8_forms(
                source / "model.onnx", stage, fp32, sequences, tol, args.threads
            )
            figures.update(quantized_figures)
        else:
            weights = quantize(source / "model.onnx", stage / "model.onnx", args.quant)
            quantized = parity.open_session(stage / "model.onnx", args.threads)
            figures[f"{args.quant}_vs_fp32"] = parity.check_quantized(fp32, quantized, sequences, args.quant, tol)
            del quantized
        del fp32
        new = mf.requantized_manifest(
            stage, manifest, source, quantization=args.quant, parity=figures, weights=weights, forms=forms
        )
        write_and_measure(stage, new, args.threads)
    log.info("wrote %s (%s, requantized from %s)", args.out, args.quant, source)


def run_verify(args: argparse.Namespace) -> None:
    directory: Path = args.directory
    manifest = mf.read_manifest(directory)
    names = [manifest.get("model", "model.onnx")]
    names += [e["file"] for e in manifest.get("forms", {}).values() if e.get("file") and e["file"] not in names]
    for name in names:
        if not (directory / name).is_file():
            raise ModelError(f"{directory / name} is missing; re-export the model")
    mf.verify_files(directory, manifest)
    prompt = parity.chat_prompts(directory / manifest["tokenizer"])[0]
    for name in names:
        session = parity.open_session(directory / name, args.threads)
        tokens = parity.greedy(session, prompt, 4, manifest["eos_token_id"])
        print(
            f"{directory}: ok ({manifest['quantization']} {name}, {len(manifest['files'])} files, "
            f"greedy {tokens[len(prompt) :]})"
        )


def run_measure(args: argparse.Namespace) -> None:
    directory: Path = args.directory
    manifest = mf.read_manifest(directory)
    mf.verify_files(directory, manifest)
    record = measure_forms(directory, manifest, args.threads)
    if record is None:
        raise ModelError(f"{directory} carries one weight form: nothing to compare (export with --quant int8)")
    manifest["speed"] = {**manifest.get("speed", {}), **record}
    # Written beside and renamed over: an interrupted write never leaves a half model.json.
    with staging_file(directory / mf.MANIFEST) as staged:
        mf.write_manifest(staged, manifest)
    (entry,) = record.values()
    print(f"{directory}: {entry['tokens_per_s']} tokens/s on {next(iter(record))} -> {entry['faster']}")


def write_and_measure(stage: Path, manifest: dict, threads: int) -> None:
    """Write model.json; with two int8 forms, time them on this CPU (at the runtime's default of 2 threads
    unless --threads says otherwise) and record that too."""
    mf.write_manifest(stage, manifest)
    record = measure_forms(stage, manifest, threads or 2)
    if record is not None:
        manifest["speed"] = record
        mf.write_manifest(stage, manifest)


def find_tokenizer(given: Path | None, checkpoint: Path) -> list[Path]:
    """tokenizer.json (and tokenizer_config.json when present) from --tokenizer or beside the checkpoint."""
    if given is not None:
        main_file = given / "tokenizer.json" if given.is_dir() else given
        if not main_file.is_file():
            raise ModelError(f"tokenizer not found: {main_file}")
    else:
        main_file = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "tokenizer.json"
        if not main_file.is_file():
            raise ModelError(
                f"no tokenizer.json beside {checkpoint} ({main_file}); pass --tokenizer PATH "
                "(the MiniMind2 tokenizer.json or its directory)"
            )
    files = [main_file]
    config_file = main_file.parent / "tokenizer_config.json"
    if config_file.is_file():
        files.append(config_file)
    return files


def check_tokenizer(
    path: Path, vocab_size: int, eos_token_id: int, generation: str = "minimind2", checkpoint: Path | None = None
) -> None:
    """The tokenizer must fit the model: ids within its vocabulary, <|im_end|> where the model expects eos, and
    the tokenizer of the model's generation (both have 6400 tokens: only the added tokens tell them apart)."""
    from tokenizers import Tokenizer

    from assistant.llm.tokenizer import THINK_CLOSE, THINK_OPEN, tokenizer_generation

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise ModelError(f"cannot read tokenizer {path}: {exc}") from exc
    if tokenizer.get_vocab_size() > vocab_size:
        raise ModelError(
            f"tokenizer {path} has {tokenizer.get_vocab_size()} tokens, the model only {vocab_size}: "
            "pass the tokenizer the model was trained with (--tokenizer)"
        )
    if tokenizer.token_to_id("<|im_end|>") != eos_token_id:
        raise ModelError(
            f"tokenizer {path}: <|im_end|> is not token {eos_token_id}; not a MiniMind tokenizer"
        )
    found = tokenizer_generation(tokenizer.get_vocab(with_added_tokens=True))
    if found != generation:
        names = {"minimind2": "MiniMind2", "minimind3": "minimind-3"}
        has = "has" if found == "minimind3" else "lacks"
        raise ModelError(
            f"tokenizer {path} is the {names[found]} tokenizer (it {has} the special tokens {THINK_OPEN} / "
            f"{THINK_CLOSE}) but {checkpoint or 'the checkpoint'} is a {names[generation]} model: pass its own "
            f"tokenizer with --tokenizer (../shared/assets/minimind-tokenizer/{names[generation].lower()}/)"
        )


def copy_tokenizer(files: list[Path], stage: Path) -> None:
    """The first file is the tokenizer (stored as tokenizer.json whatever its name); the rest keep theirs."""
    shutil.copyfile(files[0], stage / "tokenizer.json")
    for extra in files[1:]:
        shutil.copyfile(extra, stage / extra.name)


def merge_lora(model, adapter: Path) -> None:
    """Fold a LoRA adapter file (training.lora's format) into the model's weights in place."""
    try:
        from training.lora import merge_lora_file
    except ImportError as exc:
        raise ModelError(
            f"--lora needs training.lora.merge_lora_file, which is not available ({exc})"
        ) from exc
    merge_lora_file(model, adapter)


@contextmanager
def staging_file(target: Path) -> Iterator[Path]:
    """A private folder beside `target` whose file of the same name replaces `target` on success."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield folder
        os.replace(folder / target.name, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden directory beside `out` that replaces `out` on success and vanishes on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    stage.chmod(0o755)  # mkdtemp makes it private
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
