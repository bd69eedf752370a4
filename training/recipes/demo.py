"""The demo model: a micro MiniMind trained from scratch on a 2-core CPU in a fixed time budget.

    python -m training.recipes.demo [--out models/minimind-demo] [--minutes 15] [--tokenizer DIR]

1. generate the synthetic bilingual corpus (training/recipes/corpus.py) and split off held-out questions;
2. train a byte-level BPE tokenizer on that corpus (the tokenizer stage), unless `--tokenizer DIR` names one;
3. pretrain, then SFT, a micro MiniMind, each for its share of the budget by the clock: the learning-rate
   schedule follows the elapsed time (`budget_min`), so a busy machine trains fewer steps but still finishes
   its schedule, and the recipe ends on time;
4. export with `assistant-export --quant int8` (subprocess: the exporter is its own program);
5. report exact-match accuracy on the held-out questions, per kind, for the torch weights and the int8 ONNX.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from assistant.errors import AssistantError
from training.cli import command_parser, setup_logging
from training.data import load_tokenizer, render_chat
from training.loop import train
from training.recipes import corpus
from training.settings import PretrainSettings, SFTSettings
from training.stages import STAGES

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]

# Micro MiniMind: head_dim 64 as in every MiniMind2, ~1.6M parameters (0.8M of them the tied embedding).
ARCH = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1)


def accuracy(lm, tokenizer, questions: list[corpus.QA]) -> dict[str, float]:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for q in questions:
        prompt, _ = render_chat([{"role": "user", "content": q.question}], add_generation_prompt=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        reply = tokenizer.decode(lm.greedy(ids, 40)).strip()
        for key in (q.kind, "all"):
            total[key] += 1
            right[key] += reply == q.answer
    return {k: right[k] / total[k] for k in sorted(total)}


def run(out: Path, minutes: float, tokenizer_dir: str, work: Path, threads: int) -> dict:
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    items = corpus.build()
    train_items, held = corpus.split(items)
    sft_file = work / "sft_demo.jsonl"
    pre_file = work / "pretrain_demo.jsonl"
    sft_file.write_text(
        "".join(json.dumps(q.record(), ensure_ascii=False) + "\n" for q in train_items), encoding="utf-8"
    )
    pre_file.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus.pretrain_texts(train_items)),
        encoding="utf-8",
    )
    log.info(
        "corpus: %d training chats, %d held-out questions (%s)",
        len(train_items),
        len(held),
        dict(Counter(q.kind for q in held)),
    )

    if not tokenizer_dir:
        # Its own tokenizer, so the shipped demo model carries nothing but what this recipe made.
        from training.tokenizer import TokenizerSettings, train_tokenizer

        tokenizer_dir = str(train_tokenizer(TokenizerSettings(data=str(pre_file), out_dir=str(work / "tok"))))
    tokenizer = load_tokenizer(tokenizer_dir)

    common = dict(
        **ARCH,
        tokenizer=tokenizer_dir,
        init_from="",
        batch_size=32,
        grad_accum=1,
        max_length=128,
        warmup_steps=20,
        weight_decay=0.0,
        progress=False,
        log_every=50,
        save_every=200,
        threads=threads,
        min_lr_ratio=0.1,
    )
    pre = PretrainSettings(**common, data=str(pre_file), out_dir=str(work / "pretrain"), lr=3e-3)
    tuned = SFTSettings(**{**common, "init_from": ""}, data=str(sft_file), out_dir=str(work / "sft"), lr=2e-3)

    # Budget: ~20% of the time is corpus, export and evaluation; of the rest 25% pretrain, 75% SFT, by the clock.
    train_min = max(0.5, (minutes * 60 * 0.8 - (time.monotonic() - started)) / 60)
    log.info("training for %.1f min: pretrain %.1f, SFT %.1f", train_min, train_min * 0.25, train_min * 0.75)
    pre_result = train(replace(pre, budget_min=train_min * 0.25, resume=False), STAGES["pretrain"])
    sft_result = train(
        replace(tuned, init_from=str(pre_result.final_path), budget_min=train_min * 0.75, resume=False),
        STAGES["sft"],
    )
    pre_steps, sft_steps = pre_result.step, sft_result.step

    cmd = [
        sys.executable,
        "-m",
        "export.cli",
        str(sft_result.final_path),
        "--out",
        str(out),
        "--quant",
        "int8",
        "--tokenizer",
        tokenizer_dir,
    ]
    log.info("export: %s", " ".join(cmd))
    subprocess.run(cmd, cwd=REPO, check=True)

    from training.eval import OnnxLM, TorchLM

    # Greedy decoding is the slow part of the report: every non-arithmetic held-out question, 120 arithmetic.
    sample = [q for q in held if q.kind != "arithmetic"] + [q for q in held if q.kind == "arithmetic"][:120]

    report = {
        "minutes": round((time.monotonic() - started) / 60, 1),
        "train_chats": len(train_items),
        "held_out": len(held),
        "held_out_scored": len(sample),
        "pretrain_steps": pre_steps,
        "sft_steps": sft_steps,
        "pretrain_final_loss": round(pre_result.losses[-1], 4),
        "sft_final_loss": round(sft_result.losses[-1], 4),
        "held_out_accuracy_torch": accuracy(TorchLM(sft_result.final_path), tokenizer, sample),
        "held_out_accuracy_onnx_int8": accuracy(OnnxLM(out, threads=threads), tokenizer, sample),
        "train_accuracy_onnx_int8_sample": accuracy(
            OnnxLM(out, threads=threads), tokenizer, train_items[:100]
        ),
    }
    report["minutes_total"] = round((time.monotonic() - started) / 60, 1)
    (out / "demo_report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = command_parser("python -m training.recipes.demo", __doc__)
    parser.add_argument(
        "--out", type=Path, default=REPO / "models" / "minimind-demo", help="exported model dir"
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-time budget for the whole recipe")
    parser.add_argument(
        "--tokenizer", default="", help="tokenizer dir (default: train one on the demo corpus)"
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "demo", help="corpus and checkpoints")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args(argv)
    try:
        report = run(args.out, args.minutes, args.tokenizer, args.work, args.threads)
    except AssistantError as exc:
        print(f"training.recipes.demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except subprocess.CalledProcessError as exc:
        print(f"training.recipes.demo: export failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
