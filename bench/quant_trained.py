"""int8 vs int4 judged on trained weights: the export parity rule and the multiple-choice delta, one table.

    python -m bench.quant_trained --checkpoint CKPT.pth [--held FILE.jsonl|demo] [--mc PATH ...] [--mc-limit N]
    python -m bench.quant_trained --train-min 28 --work /tmp/quant-trained      # train one first, then measure

1. (--train-min) SFT a MiniMind2-Small-shaped model (training/model.py's defaults: hidden 512, 8 layers) from
   scratch on MiniMind's identity chats (../shared/assets/datasets/minimind-lora-identity, every 10th held out)
   for that many minutes by the clock (`budget_min`); see TRAIN below for why that data.
2. Peakedness, so the reader can see the weights are not random: mean max-softmax probability and entropy of the
   next-token distribution on the assistant tokens of held-out chats (--held; default the held-out identity chats
   after --train-min, else the held-out split of the shared Chinese SFT data: llamafactory-demo alpaca_zh_demo and
   medicalgpt-zh medical_sft_1K, every 20th chat), for the checkpoint and for seeded random weights of its shape.
3. Export with the project's exporter: `assistant-export CHECKPOINT --quant fp32`, then `assistant-export
   requantize` to each of int8, int8-dynamic and int4 with `--min-top1 0`, so every form is recorded rather
   than refused; the parity figures are model.json's, judged here by the export's own rule (top-1 agreement with
   fp32 on confident positions >= export.parity.Tolerances.min_top1).
4. Multiple choice (training.eval's prompts and scoring) on the same questions for torch, fp32 ONNX and each
   quantized form: accuracy with its 95% Wilson interval, the accuracy change against torch with a paired 95%
   interval, and the per-question agreement of each form's chosen letter with torch's.

--random-baseline also exports seeded random weights of the same shape and reports their parity beside, in
the same run. The table goes to stdout (--json: one JSON object); the work folder keeps the exports and
report.json. Timing is not measured here: bench/llm.py measures speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from speechdata.assets import ASSETS, TOKENIZER_DIR

log = logging.getLogger("bench.quant_trained")

DATASETS = ASSETS / "datasets"
ALPACA = DATASETS / "llamafactory-demo" / "alpaca_zh_demo.json"
MEDICAL = DATASETS / "medicalgpt-zh" / "medical_sft_1K_format.jsonl"
HELD_EVERY, HELD_AT = 20, 7  # chat i is held out when i % 20 == 7
QUANTS = ("int8", "int8-dynamic", "int4")
DEFAULT_MC = (
    DATASETS / "ceval" / "dev",
    DATASETS / "cmmlu" / "dev",
    DATASETS / "mmlu" / "dev",
    DATASETS / "arc-openbookqa",
)
# The recipe of --train-min: SFT from scratch on MiniMind's identity chats (the shared lora_identity.jsonl, every
# 10th chat held out) for many epochs. On the busy 2-core machine this was measured on, half an hour bought ~100
# steps of 8 short chats (10-20 s a step at load 13-15): one pass over the general shared SFT data got its loss only
# from 8.9 to ~7.3, logits still nearly flat. Repeating a small templated set is what makes logits peaked in that
# budget. The rate is high (gradients are clipped at 1); one thread avoids OpenMP barriers stalling under load.
TRAIN = dict(
    init_from="", max_length=128, batch_size=8, grad_accum=1, lr=1.5e-3, warmup_steps=10, min_lr_ratio=0.1,
    log_every=10, save_every=50, progress=False, resume=False,
)  # fmt: skip
IDENTITY = DATASETS / "minimind-lora-identity" / "lora_identity.jsonl"
IDENTITY_HELD_EVERY, IDENTITY_HELD_AT = 10, 3


# --- data ---


def shared_chats() -> list[list[dict]]:
    """The shared SFT chats in MiniMind's {"role", "content"} form, in file order."""
    chats = []
    for row in json.loads(ALPACA.read_text(encoding="utf-8")):
        question = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
        chats.append([{"role": "user", "content": question}, {"role": "assistant", "content": row["output"]}])
    roles = {"human": "user", "gpt": "assistant"}
    for line in MEDICAL.read_text(encoding="utf-8").splitlines():
        turns = json.loads(line)["conversations"]
        chats.append([{"role": roles[t["from"]], "content": t["value"]} for t in turns])
    return chats


def write_chats(path: Path, chats: list[list[dict]]) -> Path:
    path.write_text(
        "".join(json.dumps({"conversations": c}, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8"
    )
    return path


def split_shared(work: Path) -> tuple[Path, Path]:
    chats = shared_chats()
    train = [c for i, c in enumerate(chats) if i % HELD_EVERY != HELD_AT]
    held = [c for i, c in enumerate(chats) if i % HELD_EVERY == HELD_AT]
    return write_chats(work / "sft_train.jsonl", train), write_chats(work / "sft_held.jsonl", held)


def demo_held(work: Path) -> Path:
    """The demo recipe's held-out questions (training/recipes/corpus.py), as chats, in a seeded shuffled order
    (the corpus lists 736 arithmetic questions first; a prefix of the file should sample every kind)."""
    import random

    from training.recipes import corpus

    _, held = corpus.split(corpus.build())
    random.Random(0).shuffle(held)
    return write_chats(work / "demo_held.jsonl", [q.record()["conversations"] for q in held])


def split_identity(work: Path) -> tuple[Path, Path]:
    lines = [line for line in IDENTITY.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    chats = [json.loads(line)["conversations"] for line in lines]
    train = [c for i, c in enumerate(chats) if i % IDENTITY_HELD_EVERY != IDENTITY_HELD_AT]
    held = [c for i, c in enumerate(chats) if i % IDENTITY_HELD_EVERY == IDENTITY_HELD_AT]
    return write_chats(work / "identity_train.jsonl", train), write_chats(work / "identity_held.jsonl", held)


def train_small(work: Path, minutes: float, threads: int) -> tuple[Path, dict]:
    from training.loop import train
    from training.settings import SFTSettings
    from training.stages import STAGES

    data, _ = split_identity(work)
    settings = SFTSettings(
        **TRAIN, data=str(data), out_dir=str(work / "sft"), tokenizer=str(TOKENIZER_DIR), threads=threads
    )
    started = time.monotonic()
    result = train(replace(settings, budget_min=minutes), STAGES["sft"])
    losses = result.losses
    tail = losses[-20:]
    info = {
        "minutes": round((time.monotonic() - started) / 60, 1),
        "steps": result.step,
        "batch": TRAIN["batch_size"],
        "max_length": TRAIN["max_length"],
        "first_loss": round(losses[0], 3),
        "final_loss_mean_last_20": round(sum(tail) / len(tail), 3),
        "chats": len(data.read_text(encoding="utf-8").splitlines()),
    }
    return result.final_path, info


# --- peakedness ---


def peakedness(model, tokenizer, held: Path, *, limit: int, max_length: int = 256) -> dict:
    """Mean max-softmax probability and entropy (nats) of the next-token distribution at the assistant tokens."""
    import torch

    from training.data import JsonlFile, encode_sft

    file = JsonlFile(held)
    top, entropy, count = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(min(limit, len(file))):
            enc = encode_sft(file.read(i), tokenizer, max_length)
            logits = model(torch.tensor([enc.ids[:-1]])).logits[0].double()
            keep = torch.tensor([w > 0 for w in enc.weights[1:]])
            logp = torch.log_softmax(logits[keep], -1)
            top += float(logp.max(-1).values.exp().sum())
            entropy += float(-(logp.exp() * logp).sum())
            count += int(keep.sum())
    return {"positions": count, "mean_max_prob": top / count, "mean_entropy": entropy / count}


def random_twin(config, seed: int = 0):
    import torch

    from training.model import MiniMindForCausalLM

    torch.manual_seed(seed)
    return MiniMindForCausalLM(config).eval()


# --- export ---


def export_forms(checkpoint: Path, tokenizer: Path, root: Path, threads: int) -> dict[str, Path]:
    """fp32 from the checkpoint, then each quantized form requantized from it (no form is refused)."""
    from export.cli import main as export_main

    dirs = {"fp32": root / "fp32"}
    args = [str(checkpoint), "--out", str(dirs["fp32"]), "--quant", "fp32", "--tokenizer", str(tokenizer)]
    if export_main([*args, "--threads", str(threads)]) != 0:
        raise SystemExit(f"fp32 export of {checkpoint} failed")
    for quant in QUANTS:
        dirs[quant] = root / quant
        args = ["requantize", str(dirs["fp32"]), "--out", str(dirs[quant]), "--quant", quant, "--min-top1", "0"]
        if export_main([*args, "--threads", str(threads)]) != 0:
            raise SystemExit(f"{quant} requantize failed")
    return dirs


def confident_ci(figures: dict) -> list[float] | None:
    """95% Wilson interval of the top-1 agreement on confident positions (the sample is small on short replies)."""
    n, share = figures["confident_positions"], figures["top1_agreement_confident"]
    return None if share is None else wilson(round(share * n), n)


def parity_rows(dirs: dict[str, Path]) -> dict[str, dict]:
    from export.parity import Tolerances

    rule = Tolerances().min_top1
    rows = {}
    for quant in QUANTS:
        manifest = json.loads((dirs[quant] / "model.json").read_text(encoding="utf-8"))
        figures = manifest["parity"][f"{quant}_vs_fp32"]
        confident = figures["top1_agreement_confident"]
        rows[quant] = {
            **{k: figures[k] for k in ("positions", "confident_positions", "top1_agreement_all", "mean_kl")},
            "top1_agreement_confident": confident,
            "top1_agreement_confident_ci95": confident_ci(figures),
            "passes": confident is None or confident >= rule,
            "rule": rule,
            "model_bytes": (dirs[quant] / "model.onnx").stat().st_size,
        }
    fp32 = json.loads((dirs["fp32"] / "model.json").read_text(encoding="utf-8"))["parity"]["fp32_vs_torch"]
    rows["fp32"] = {"max_abs_diff_vs_torch": fp32["max_abs_diff"], "tolerance": fp32["tolerance"]}
    return rows


def held_out_parity(
    dirs: dict[str, Path], tokenizer, held: Path, *, limit: int, threads: int, forms: tuple[str, ...] = QUANTS
) -> dict[str, dict]:
    """The parity rule on more positions: each quantized form (`forms`, keys of `dirs`) against fp32 ONNX
    (dirs["fp32"]), teacher-forced through the decode path (export.parity's method) on held-out chats: the
    prompt as prefill, the reply a token a step."""
    from export.parity import Tolerances, compare, open_session, teacher_forced
    from training.data import JsonlFile, encode_sft

    file = JsonlFile(held)
    sequences = []
    for i in range(min(limit, len(file))):
        enc = encode_sft(file.read(i), tokenizer, 192)
        prefill = next((t for t, w in enumerate(enc.weights) if w > 0), len(enc.ids)) - 1
        if 1 < prefill < len(enc.ids):
            sequences.append((enc.ids, prefill))
    fp32 = open_session(dirs["fp32"] / "model.onnx", threads)
    ref = np.concatenate([teacher_forced(fp32, s, n) for s, n in sequences])
    rule = Tolerances().min_top1
    rows = {}
    for quant in forms:
        session = open_session(dirs[quant] / "model.onnx", threads)
        figures = compare(ref, np.concatenate([teacher_forced(session, s, n) for s, n in sequences]))
        figures.pop("max_abs_diff")
        confident = figures["top1_agreement_confident"]
        ci = confident_ci(figures)
        rows[quant] = {**figures, "top1_agreement_confident_ci95": ci, "passes": confident is None or confident >= rule}
        rows[quant]["rule"] = rule
        log.info("held-out parity %s: %s", quant, rows[quant])
    return rows


# --- multiple choice ---


def load_questions(paths: list[Path], limit: int) -> list:
    from training.mc import read_choices, subject_files

    questions = []
    for path in paths:
        for file in subject_files(path):
            found = read_choices(file)
            questions += found[:limit] if limit > 0 else found
    return questions


def wilson(k: int, n: int) -> list[float]:
    from training.mc import wilson_interval

    return [round(x, 4) for x in wilson_interval(k, n)]


def paired_delta(test: list[bool], base: list[bool]) -> dict:
    """Accuracy change test - base on the same questions, with a normal 95% interval on the paired differences."""
    d = np.asarray(test, float) - np.asarray(base, float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {
        "delta": round(float(d.mean()), 4),
        "ci95": [round(float(d.mean() - half), 4), round(float(d.mean() + half), 4)],
    }


def mc_rows(forms: dict[str, object], questions: list, tokenizer) -> dict[str, dict]:
    from training.eval import choice_predictions

    picks = {}
    for name, lm in forms.items():
        started = time.monotonic()
        picks[name] = choice_predictions(lm, questions, tokenizer)
        log.info("mc %s: %d questions in %.0f s", name, len(questions), time.monotonic() - started)
    answers = [q.answer for q in questions]
    chance = sum(1 / len(q.choices) for q in questions) / len(questions)
    base = next(iter(forms))  # the first of --mc-forms: torch by default
    right = {name: [p == a for p, a in zip(picks[name], answers, strict=True)] for name in forms}
    rows = {}
    n = len(questions)
    for name in forms:
        agree = sum(p == b for p, b in zip(picks[name], picks[base], strict=True))
        rows[name] = {
            "questions": n,
            "accuracy": round(sum(right[name]) / n, 4),
            "accuracy_ci95": wilson(sum(right[name]), n),
            "chance": round(chance, 4),
            f"delta_vs_{base}": paired_delta(right[name], right[base]),
            f"agreement_with_{base}": round(agree / n, 4),
            f"agreement_with_{base}_ci95": wilson(agree, n),
        }
    return rows


# --- the run ---


def measure(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from training.data import load_tokenizer
    from training.eval import OnnxLM, TorchLM

    torch.set_num_threads(args.threads)
    report: dict = {}
    checkpoint = args.checkpoint
    if args.train_min:
        checkpoint, report["training"] = train_small(work, args.train_min, args.train_threads or args.threads)
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else checkpoint.parent
    if not (tokenizer_dir / "tokenizer.json").is_file():
        tokenizer_dir = TOKENIZER_DIR
    tokenizer = load_tokenizer(str(tokenizer_dir))
    report["checkpoint"] = str(checkpoint)

    torch_lm = TorchLM(checkpoint)
    if args.held == "demo":
        held = demo_held(work)
    elif args.held:
        held = Path(args.held)
    else:  # the held-out part of what --train-min trains on
        held = split_identity(work)[1] if args.train_min else split_shared(work)[1]
    report["peakedness"] = {
        "held_out": str(held),
        "trained": peakedness(torch_lm.model, tokenizer, held, limit=args.held_limit),
        "random": peakedness(random_twin(torch_lm.config), tokenizer, held, limit=args.held_limit),
    }
    dirs = export_forms(checkpoint, tokenizer_dir, work / "trained", args.threads)
    report["parity"] = parity_rows(dirs)
    report["parity_held_out"] = held_out_parity(dirs, tokenizer, held, limit=args.parity_chats, threads=args.threads)
    if args.random_baseline:
        from training.weights import save_pth

        twin = work / "random" / f"random_{torch_lm.config.hidden_size}.pth"
        twin.parent.mkdir(parents=True, exist_ok=True)
        save_pth(random_twin(torch_lm.config), twin)
        report["parity_random"] = parity_rows(export_forms(twin, tokenizer_dir, work / "random", args.threads))

    if not args.mc_forms:
        return report
    questions = load_questions([Path(p) for p in args.mc] or list(DEFAULT_MC), args.mc_limit)
    wanted = args.mc_forms.split(",")
    unknown = sorted(set(wanted) - {"torch", *dirs})
    if unknown:
        raise SystemExit(f"--mc-forms: unknown form(s) {', '.join(unknown)} (torch, {', '.join(dirs)})")
    forms: dict[str, object] = {"torch": torch_lm} if "torch" in wanted else {}
    forms.update({name: OnnxLM(d, threads=args.threads) for name, d in dirs.items() if name in wanted})
    report["mc_sets"] = [str(p) for p in (args.mc or DEFAULT_MC)]
    report["mc_limit_per_file"] = args.mc_limit
    report["mc"] = mc_rows(forms, questions, tokenizer)
    return report


def table(report: dict) -> str:
    lines = []
    if "training" in report:
        lines.append(f"training: {json.dumps(report['training'])}")
    p = report["peakedness"]
    trained, rand = p["trained"], p["random"]
    lines += [
        f"peakedness on {trained['positions']} held-out assistant tokens ({p['held_out']}):",
        f"  trained: mean max prob {trained['mean_max_prob']:.3f}, entropy {trained['mean_entropy']:.2f} nats",
        f"  random:  mean max prob {rand['mean_max_prob']:.4f}, entropy {rand['mean_entropy']:.2f} nats",
        f"fp32 ONNX vs torch: max |dlogit| {report['parity']['fp32']['max_abs_diff_vs_torch']:.1e}",
        "",
        "| weights | form | top-1 confident (95% CI) | confident / positions | top-1 all | mean KL | passes | MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = (("trained", "parity"), ("trained, held-out chats", "parity_held_out"), ("random", "parity_random"))
    for label, key in rows:
        for quant in QUANTS if key in report else ():
            r = report[key][quant]
            ci = r.get("top1_agreement_confident_ci95")
            conf = "n/a" if ci is None else f"{r['top1_agreement_confident']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"
            size = f"{r['model_bytes'] / 1e6:.1f}" if "model_bytes" in r else ""
            lines.append(
                f"| {label} | {quant} | {conf} | {r['confident_positions']} / {r['positions']} | "
                f"{r['top1_agreement_all']:.3f} | {r['mean_kl']:.2e} | {'yes' if r['passes'] else 'no'} "
                f"(>= {r['rule']}) | {size} |"
            )
    if "mc" not in report:
        return "\n".join(lines)
    mc = report["mc"]
    base = next(iter(mc))
    first = mc[base]
    lines += [
        "",
        f"multiple choice: {first['questions']} questions ({report['mc_limit_per_file'] or 'all'} per file of "
        f"{', '.join(report['mc_sets'])}), chance {first['chance']:.3f}",
        "",
        f"| form | accuracy (95% CI) | change vs {base} (95% CI) | same letter as {base} (95% CI) |",
        "|---|---|---|---|",
    ]
    for name, r in mc.items():
        lo, hi = r["accuracy_ci95"]
        d = r[f"delta_vs_{base}"]
        a_lo, a_hi = r[f"agreement_with_{base}_ci95"]
        lines.append(
            f"| {name} | {r['accuracy']:.3f} ({lo:.3f}-{hi:.3f}) | {d['delta']:+.3f} ({d['ci95'][0]:+.3f} to "
            f"{d['ci95'][1]:+.3f}) | {r[f'agreement_with_{base}']:.3f} ({a_lo:.3f}-{a_hi:.3f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quant_trained", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a trained .pth (config.json and tokenizer beside it)")
    source.add_argument("--train-min", type=float, help="train a MiniMind2-Small-shaped model this long first")
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads while training (%(default)s)")
    parser.add_argument("--tokenizer", default="", help="tokenizer dir (default: beside the checkpoint)")
    parser.add_argument(
        "--held", default="", help="held-out chats (jsonl) for the peakedness figures; 'demo': the demo "
        "recipe's held-out questions; default: the held-out split of the shared SFT data"
    )  # fmt: skip
    parser.add_argument("--held-limit", type=int, default=50, help="held-out chats for peakedness (%(default)s)")
    parser.add_argument(
        "--parity-chats",
        type=int,
        default=30,
        help="held-out chats for the parity rule on more positions (%(default)s)",
    )
    parser.add_argument(
        "--mc", action="append", default=[], help="multiple-choice file or folder (default: C-Eval, CMMLU and "
        "MMLU dev, ARC/OpenBookQA)"
    )  # fmt: skip
    parser.add_argument("--mc-limit", type=int, default=100, help="questions per file (0: all; default %(default)s)")
    parser.add_argument(
        "--mc-forms",
        default="torch,fp32,int8,int8-dynamic,int4",
        help="forms scored on the questions, the first is the baseline; empty: none (default %(default)s)",
    )
    parser.add_argument("--random-baseline", action="store_true", help="also export random weights of the shape")
    parser.add_argument("--work", type=Path, help="keep exports and report.json here (default: a temp folder)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch and onnxruntime threads (1 on a busy machine: see BENCHMARKS.md)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.checkpoint and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    with tempfile.TemporaryDirectory(prefix="quant-trained-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = measure(args, work)
        (work / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
