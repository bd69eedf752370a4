"""MatMulNBits variants of one fp32 export (block size, accuracy level), to time with bench/llm.py --extra.

Each variant is requantized from the fp32 export with export/quantize.py's block_size / accuracy_level options
and gets its own model.json (files' sha256, the parity figures against fp32, measured, not enforced: random
weights have flat logits, so top-1 agreement says little about them; the default's parity rule is checked by
tests/test_export.py on the real conformance models). It prints the --extra arguments to pass to bench/llm.py.

    .venv/bin/python -m bench.llm --runs 1 --keep /tmp/llm              # makes /tmp/llm/fp32
    .venv/bin/python -m bench.llm_variants /tmp/llm/fp32 --out /tmp/llm/variants \\
        int8:32:4 int8:64:4 int8:128:4 int8:256:4 int8:128:0 int4:32:4 int4:64:4 int4:128:4 int4:32:0
    .venv/bin/python -m bench.llm --runs 5 --extra LABEL=DIR ...         (the printed arguments)

A variant is QUANT:BLOCK:LEVEL: int8 or int4, the K elements per scale, accuracy_level (0: fp32 compute,
4: int8 activations and int8 dot products, VNNI where the CPU has it).

On trained weights the 6 parity prompts are few positions; --held FILE.jsonl also applies the export's parity
rule to held-out chats teacher-forced through the decode path (bench/quant_trained.py's method), e.g. for the
int4 block size (BENCHMARKS.md, "int4 block size"):

    .venv/bin/python -m bench.llm_variants /tmp/int4/small/trained/fp32 --out /tmp/int4/small/var \
        int4:32:4 int4:64:4 int4:128:4 --held /tmp/int4/small/identity_held.jsonl --held 20:shared
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from export import manifest as mf
from export import parity
from export.cli import TOKENIZER_FILES, copy_tokenizer, staging
from export.quantize import quantize


def parse_variant(text: str) -> tuple[str, int, int]:
    quant, block, level = (text.split(":") + ["", ""])[:3]
    if quant not in ("int8", "int4") or not block.isdigit() or level not in ("0", "1", "2", "3", "4"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected QUANT:BLOCK:LEVEL, e.g. int8:64:4")
    return quant, int(block), int(level)


def make_variant(source: Path, out: Path, quant: str, block: int, level: int) -> dict:
    """Requantize the fp32 export `source` into `out` with these MatMulNBits settings; return its parity."""
    manifest = mf.read_manifest(source)
    with staging(out) as stage:
        copy_tokenizer([source / n for n in TOKENIZER_FILES if (source / n).is_file()], stage)
        weights = quantize(source / "model.onnx", stage / "model.onnx", quant, block_size=block, accuracy_level=level)
        fp32 = parity.open_session(source / "model.onnx")
        quantized = parity.open_session(stage / "model.onnx")
        sequences = parity.build_sequences(
            fp32, parity.chat_prompts(stage / "tokenizer.json"), manifest["eos_token_id"]
        )
        figures = {
            f"{quant}_vs_fp32": parity.check_quantized(fp32, quantized, sequences, quant, parity.Tolerances(min_top1=0))
        }
        del fp32, quantized
        mf.write_manifest(
            stage, mf.requantized_manifest(stage, manifest, source, quantization=quant, parity=figures, weights=weights)
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an fp32 export (bench/llm.py --keep DIR makes DIR/fp32)")
    parser.add_argument("variants", type=parse_variant, nargs="+", metavar="QUANT:BLOCK:LEVEL")
    parser.add_argument("--out", type=Path, required=True, help="folder for the variant exports")
    parser.add_argument(
        "--held", action="append", default=[], metavar="[N:]FILE.jsonl|[N:]shared",
        help="held-out chats to judge every variant on (first N, default 30; 'shared': the shared SFT data's "
        "held-out split, as bench/quant_trained.py makes it); repeatable",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extras = []
    dirs = {"fp32": args.source}
    for quant, block, level in args.variants:
        label = f"{quant}-b{block}-a{level}"
        figures = make_variant(args.source, args.out / label, quant, block, level)
        print(f"{label}: {figures}")
        extras.append(f"--extra {label}={args.out / label}")
        dirs[label] = args.out / label
    print(" ".join(extras))
    for spec in args.held:
        held_out(dirs, spec, args.out)
    return 0


def held_out(dirs: dict[str, Path], spec: str, work: Path) -> None:
    """Print the parity figures of every variant on the held-out chats of `spec` ([N:]FILE.jsonl or [N:]shared)."""
    from bench.quant_trained import held_out_parity, split_shared
    from training.data import load_tokenizer

    count, sep, name = spec.partition(":")
    limit, name = (int(count), name) if sep and count.isdigit() else (30, spec)
    held = split_shared(work)[1] if name == "shared" else Path(name)
    forms = tuple(k for k in dirs if k != "fp32")
    rows = held_out_parity(dirs, load_tokenizer(str(dirs["fp32"])), held, limit=limit, threads=1, forms=forms)
    print(f"\nheld-out parity on {limit} chats of {held.name}:")
    print("| variant | positions (confident) | top-1 confident | top-1 all | mean KL vs fp32 | rule |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['positions']} ({r['confident_positions']}) | {r['top1_agreement_confident']:.4f} | "
              f"{r['top1_agreement_all']:.4f} | {r['mean_kl']:.2e} | {'pass' if r['passes'] else 'FAIL'} |")


if __name__ == "__main__":
    raise SystemExit(main())
