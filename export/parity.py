"""Parity of an exported graph: fp32 ONNX vs torch, and quantized vs fp32 ONNX, on a fixed prompt set.

Each prompt is rendered with the chat template of the tokenizer's generation (MiniMind2 or minimind-3) and
extended by a greedy continuation of the fp32 graph, so the checked positions include the model's own confident
predictions. Graphs are run through the decode path (a prefill of the prompt, then one token per step with the
KV cache), teacher-forced on that same sequence.

Imports no torch at module level: the quantized-vs-fp32 check runs in torch-free requantization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from assistant.errors import ModelError

log = logging.getLogger(__name__)

PROMPTS = (
    "你好，请介绍一下你自己。",
    "What is the capital of France?",
    "中国最高的山是哪座？",
    "请写一首关于春天的短诗。",
    "Explain why the sky is blue in one sentence.",
    "1+1等于几？",
)
SYSTEM_PROMPT = "You are a helpful assistant"
CONTINUATION = 32  # greedy tokens appended to each prompt
CONFIDENT_GAP = 0.5  # a position counts for top-1 agreement when fp32's top1 - top2 logit gap exceeds this


@dataclass(frozen=True)
class Tolerances:
    fp32_max_abs: float = 1e-4  # fp32 ONNX vs torch, max |logit difference|
    min_top1: float = 0.98  # quantized vs fp32, top-1 agreement on confident positions


def chat_prompts(tokenizer_file: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    from assistant.llm.tokenizer import render_chat, tokenizer_generation

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    generation = tokenizer_generation(tokenizer.get_vocab(with_added_tokens=True))
    rendered = (render_chat(q, system_prompt=SYSTEM_PROMPT, generation=generation) for q in PROMPTS)
    return [tokenizer.encode(text, add_special_tokens=False).ids for text in rendered]


def open_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Errors only: onnxruntime warns about every overridable initializer (the fused graph's optional
    # total_sequence_length input) each time a session opens.
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a damaged file
        raise ModelError(f"cannot load {path}: {exc}") from exc


class _Graph:
    """A session and the shapes of its KV inputs, read from the graph itself."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.kv_inputs = [i for i in session.get_inputs() if i.name.startswith("past_")]
        self.kv_outputs = [o.name for o in session.get_outputs() if o.name.startswith("present_")]

    def empty_cache(self) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in self.kv_inputs}

    def step(self, ids: list[int], cache: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feed = {"input_ids": np.asarray([ids], dtype=np.int64), **cache}
        logits, *presents = self.session.run(None, feed)
        cache = {
            name.replace("present_", "past_"): t for name, t in zip(self.kv_outputs, presents, strict=True)
        }
        return logits[0], cache


def greedy(session: ort.InferenceSession, prompt: list[int], steps: int, eos: int) -> list[int]:
    graph = _Graph(session)
    logits, cache = graph.step(prompt, graph.empty_cache())
    out = list(prompt)
    for _ in range(steps):
        token = int(logits.argmax())
        out.append(token)
        if token == eos:
            break
        logits, cache = graph.step([token], cache)
    return out


def teacher_forced(session: ort.InferenceSession, sequence: list[int], prefill: int) -> np.ndarray:
    """Logits [len - prefill + 1, V] at positions prefill-1 .. len-1: prefill, then one token per step."""
    graph = _Graph(session)
    # The prompt goes in as two chunks, so a prefill on top of a cache (P > 0, S > 1: the next turn of a
    # conversation) is checked too.
    half = prefill // 2
    cache = graph.empty_cache()
    if half > 0:
        _, cache = graph.step(sequence[:half], cache)
    logits, cache = graph.step(sequence[half:prefill], cache)
    rows = [logits]
    for token in sequence[prefill:]:
        logits, cache = graph.step([token], cache)
        rows.append(logits)
    return np.stack(rows)


def torch_logits(model, sequence: list[int], prefill: int) -> np.ndarray:
    """The torch model's full-forward logits at the positions `teacher_forced` returns."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0]  # [len, V]
    return logits[prefill - 1 :].float().numpy()


def build_sequences(
    fp32: ort.InferenceSession, prompts: list[list[int]], eos: int
) -> list[tuple[list[int], int]]:
    return [(greedy(fp32, p, CONTINUATION, eos), len(p)) for p in prompts]


def compare(reference: np.ndarray, test: np.ndarray) -> dict:
    """max |Δ|, top-1 agreement (all and confident positions) and mean KL(reference || test) per position."""
    top2 = np.sort(reference, axis=-1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > CONFIDENT_GAP
    agree = reference.argmax(-1) == test.argmax(-1)
    log_p = _log_softmax(reference)
    log_q = _log_softmax(test)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return {
        "positions": int(len(reference)),
        "confident_positions": int(confident.sum()),
        "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else None,
        "top1_agreement_all": float(agree.mean()),
        "mean_kl": float(kl.mean()),
        "max_abs_diff": float(np.abs(reference - test).max()),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def check_fp32(
    model, fp32: ort.InferenceSession, sequences: list[tuple[list[int], int]], tol: Tolerances
) -> dict:
    ref = np.concatenate([torch_logits(model, s, n) for s, n in sequences])
    got = np.concatenate([teacher_forced(fp32, s, n) for s, n in sequences])
    figures = compare(ref, got)
    result = {
        "max_abs_diff": figures["max_abs_diff"],
        "positions": figures["positions"],
        "tolerance": tol.fp32_max_abs,
    }
    log.info(
        "parity fp32 ONNX vs torch: max |dlogit| %.2e over %d positions (tolerance %.0e)",
        figures["max_abs_diff"],
        figures["positions"],
        tol.fp32_max_abs,
    )
    if not figures["max_abs_diff"] <= tol.fp32_max_abs:
        raise ModelError(
            f"fp32 ONNX differs from torch by {figures['max_abs_diff']:.3g} "
            f"(tolerance {tol.fp32_max_abs:g}); export refused"
        )
    return result


def check_quantized(
    fp32: ort.InferenceSession,
    quantized: ort.InferenceSession,
    sequences: list[tuple[list[int], int]],
    quant: str,
    tol: Tolerances,
) -> dict:
    figures = quantized_figures(fp32, quantized, sequences, quant, tol)
    failure = parity_failure(figures, quant)
    if failure:
        raise ModelError(failure + "; export refused")
    return figures


def parity_failure(figures: dict, quant: str) -> str | None:
    """Why the figures of `quantized_figures` fail the top-1 rule, or None when they pass."""
    agreement = figures["top1_agreement_confident"]
    if agreement is None or agreement >= figures["min_top1"]:
        return None
    return (
        f"{quant} top-1 agreement with fp32 is {agreement:.4f} on "
        f"{figures['confident_positions']} confident positions (minimum {figures['min_top1']})"
    )


def quantized_figures(
    fp32: ort.InferenceSession,
    quantized: ort.InferenceSession,
    sequences: list[tuple[list[int], int]],
    quant: str,
    tol: Tolerances,
) -> dict:
    """The parity figures of a quantized graph against fp32 (logged; not judged)."""
    ref = np.concatenate([teacher_forced(fp32, s, n) for s, n in sequences])
    got = np.concatenate([teacher_forced(quantized, s, n) for s, n in sequences])
    figures = compare(ref, got)
    figures["min_top1"] = tol.min_top1
    agreement = figures["top1_agreement_confident"]
    log.info(
        "parity %s vs fp32: top-1 %s on %d confident of %d positions (all: %.3f), mean KL %.2e",
        quant,
        "n/a" if agreement is None else f"{agreement:.4f}",
        figures["confident_positions"],
        figures["positions"],
        figures["top1_agreement_all"],
        figures["mean_kl"],
    )
    if agreement is None:
        # Random weights can leave no position with a clear winner: nothing for the top-1 rule to judge.
        log.warning(
            "no confident positions (fp32 top1-top2 gap > %.1f): top-1 rule not applicable", CONFIDENT_GAP
        )
    return figures
