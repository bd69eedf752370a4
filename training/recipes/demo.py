"""The demo model: a micro MiniMind trained from scratch on a 2-core CPU in a fixed time budget.

    python -m training.recipes.demo [--out models/minimind-demo] [--minutes 15] [--tokenizer DIR]

1. generate the synthetic bilingual corpus (training/recipes/corpus.py) and split off held-out questions;
2. reuse the MiniMind2 tokenizer (or train one with the tokenizer stage when none is given or found);
3. pretrain, then SFT, a micro MiniMind (steps sized from a measured step time to fit the budget);
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
from training.data import DEFAULT_TOKENIZER, load_tokenizer, render_chat
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


def _step_seconds(settings, stage, work: Path) -> float:
    """Wall time of one optimizer step of this configuration, measured on this machine now.

    Runs 10 steps and takes the median of the per-step times the loop records in metrics.jsonl, leaving out
    the first two: they carry one-off costs (allocator and thread-pool warm-up), and timing whole runs
    instead mixes in start-up work (indexing, model build) that differs between runs.
    """
    train(replace(settings, out_dir=str(work), steps=10, resume=False, progress=False), stage)
    with (work / "metrics.jsonl").open(encoding="utf-8") as metrics:
        times = sorted(json.loads(line)["ms"] / 1000 for line in metrics if json.loads(line)["step"] > 2)
    return max(1e-3, times[len(times) // 2])


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
        if DEFAULT_TOKENIZER.is_dir():
            tokenizer_dir = str(DEFAULT_TOKENIZER)
        else:
            from training.tokenizer import TokenizerSettings, train_tokenizer

            tokenizer_dir = str(
                train_tokenizer(TokenizerSettings(data=str(sft_file), out_dir=str(work / "tok")))
            )
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

    # Budget: ~20% of the time is corpus, probes, export and evaluation; of the rest 25% pretrain, 75% SFT.
    # Pretrain packs longer sequences than SFT's short chats, so each stage's step is timed on its own.
    pre_step_s = _step_seconds(pre, STAGES["pretrain"], work / "probe-pretrain")
    sft_step_s = _step_seconds(tuned, STAGES["sft"], work / "probe-sft")
    train_s = minutes * 60 * 0.8 - (time.monotonic() - started)
    pre_steps = max(20, int(train_s * 0.25 / pre_step_s))
    sft_steps = max(20, int(train_s * 0.75 / sft_step_s))
    log.info(
        "step %.2f s (pretrain) / %.2f s (SFT): pretrain %d steps, SFT %d steps",
        pre_step_s,
        sft_step_s,
        pre_steps,
        sft_steps,
    )

    pre_result = train(replace(pre, steps=pre_steps), STAGES["pretrain"])
    sft_result = train(replace(tuned, init_from=str(pre_result.final_path), steps=sft_steps), STAGES["sft"])

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
        "--tokenizer", default="", help="tokenizer dir (default: MiniMind2's beside the repo)"
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
