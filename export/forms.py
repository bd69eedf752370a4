"""Both int8 weight forms in one export (`--quant int8`), each checked for parity, and a short speed measurement.

The files: the first form that passed parity, in the order blocks, dynamic, is model.onnx (what an older
runtime loads); the other one, when it passed too, is model.int8-<form>.onnx. A form that failed parity is not
kept: model.json records its figures with "passed": false and the runtime never chooses it. The export is
refused only when both fail.

model.json gains:
  "forms": {"blocks": {"file", "quantization", "weights", "parity", "passed", "sha256"}, "dynamic": {...}}
  "speed": {"<cpu model> [<features>]": {"reply_ms": {form: ms}, "prefill_ms", "tokens_per_s", "faster", ...}}
"speed" is measured by the export on the machine it runs on (and by `assistant-export measure DIR` on another);
the runtime uses a record for its own CPU before the feature rule (assistant/llm/weights.py).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from assistant.llm.weights import FORM_QUANT, INT8_FORMS, this_cpu
from assistant.models.fetch import sha256_file
from export import parity
from export.quantize import quantize

log = logging.getLogger(__name__)

# Interleaved rounds: at least MEASURE_ROUNDS and MEASURE_S seconds in all (a tiny model's round is a few ms),
# at most MAX_ROUNDS. The best round of each form counts: on a shared machine other processes only ever add time,
# and the demo model's medians flipped between runs at a load average of 13 where its best rounds did not.
MEASURE_ROUNDS = 5
MEASURE_S = 1.5
MAX_ROUNDS = 200
# A round is what a voice reply's first sentence waits for: the prefill of a 64-token prompt (the TTFT target's
# length), then 32 decode steps. The forms trade one against the other (blocks decode faster and prefill slower
# on some CPUs), so the choice goes by the round's total ("reply_ms"); both parts are recorded too.
MEASURE_PROMPT = 64
MEASURE_STEPS = 32


def form_file(form: str, primary: bool) -> str:
    return "model.onnx" if primary else f"model.{FORM_QUANT[form]}.onnx"


def write_int8_forms(
    fp32_path: Path,
    stage: Path,
    fp32,
    sequences: list[tuple[list[int], int]],
    tol: parity.Tolerances,
    threads: int = 0,
) -> tuple[dict, dict, dict]:
    """Quantize `fp32_path` to both int8 forms in `stage`; return (forms, parity figures, weights of model.onnx).

    `fp32` is the open fp32 session and `sequences` the parity sequences built from it.
    """
    figures: dict[str, dict] = {}
    described: dict[str, dict] = {}
    failures: dict[str, str] = {}
    for form in INT8_FORMS:
        quant = FORM_QUANT[form]
        staged = stage / f"{quant}.onnx.tmp"
        described[form] = quantize(fp32_path, staged, quant)
        session = parity.open_session(staged, threads)
        figures[form] = parity.quantized_figures(fp32, session, sequences, quant, tol)
        del session
        failure = parity.parity_failure(figures[form], quant)
        if failure:
            failures[form] = failure
            log.warning("%s: not kept (%s)", form, failure)
            staged.unlink()
    if len(failures) == len(INT8_FORMS):
        raise ModelError("; ".join(failures.values()) + "; export refused")
    passed = [form for form in INT8_FORMS if form not in failures]
    forms: dict[str, dict] = {}
    parity_figures: dict[str, dict] = {}
    for form in INT8_FORMS:
        quant = FORM_QUANT[form]
        parity_figures[f"{quant}_vs_fp32"] = figures[form]
        entry = {"quantization": quant, "weights": described[form], "parity": f"{quant}_vs_fp32"}
        if form in failures:
            forms[form] = {**entry, "passed": False, "file": None, "error": failures[form]}
            continue
        name = form_file(form, primary=form == passed[0])
        (stage / f"{quant}.onnx.tmp").rename(stage / name)
        forms[form] = {**entry, "passed": True, "file": name, "sha256": sha256_file(stage / name)}
    # The key older readers know: the parity of model.onnx.
    parity_figures["int8_vs_fp32"] = figures[passed[0]]
    return forms, parity_figures, described[passed[0]]


def measure_forms(directory: Path, manifest: dict, threads: int) -> dict | None:
    """Time a few decode steps of each usable form on this CPU, interleaved; the "speed" record to merge into
    model.json under this CPU's key (None when the export has fewer than two usable forms)."""
    from assistant.llm.runtime import MiniMindOnnx

    usable = [name for name, entry in manifest.get("forms", {}).items() if entry.get("passed")]
    if len(usable) < 2:
        return None
    cpu = this_cpu()
    models = {
        form: MiniMindOnnx(directory, threads=threads, weights=form, verify_sha256=False, cpu=cpu) for form in usable
    }
    vocab = manifest["architecture"]["vocab_size"]
    prompt = np.random.default_rng(7).integers(3, vocab, MEASURE_PROMPT).tolist()
    rates: dict[str, list[float]] = {form: [] for form in usable}
    prefill: dict[str, list[float]] = {form: [] for form in usable}
    reply: dict[str, list[float]] = {form: [] for form in usable}
    began = time.perf_counter()
    rounds = 0
    while rounds <= MEASURE_ROUNDS or (time.perf_counter() - began < MEASURE_S and rounds <= MAX_ROUNDS):
        rounds += 1  # the first round warms up and is dropped
        for form, model in models.items():
            sequence = model.new_sequence(capacity=MEASURE_PROMPT + MEASURE_STEPS + 1)
            started = time.perf_counter()
            logits = sequence.feed(prompt)
            first = time.perf_counter()
            for _ in range(MEASURE_STEPS):
                logits = sequence.feed((int(logits.argmax()),))
            done = time.perf_counter()
            prefill[form].append((first - started) * 1000)
            rates[form].append(MEASURE_STEPS / (done - first))
            reply[form].append((done - started) * 1000)
    del models
    tokens_per_s = {form: round(max(r[1:]), 1) for form, r in rates.items()}
    prefill_ms = {form: round(min(r[1:]), 2) for form, r in prefill.items()}
    reply_ms = {form: round(min(r[1:]), 2) for form, r in reply.items()}
    faster = min(reply_ms, key=reply_ms.get)
    log.info(
        "measured on %s at %d threads: prefill of %d tokens %s ms, then %s tokens/s; %d-token reply %s ms -> %s",
        cpu.key, threads, MEASURE_PROMPT, prefill_ms, tokens_per_s, MEASURE_STEPS, reply_ms, faster,
    )  # fmt: skip
    return {
        cpu.key: {
            "cpu": cpu.model,
            "features": cpu.relevant,
            "threads": threads,
            "decode_steps": MEASURE_STEPS,
            "rounds": rounds - 1,
            "figure": "best round",
            "prompt_tokens": MEASURE_PROMPT,
            "tokens_per_s": tokens_per_s,
            "prefill_ms": prefill_ms,
            "reply_ms": reply_ms,
            "faster": faster,
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }
