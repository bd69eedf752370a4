"""Evaluate a model the same way whether it is a torch checkpoint or an exported ONNX directory, so the cost of
export and quantization shows up as a number.

    python -m training.eval MODEL [--ppl FILE.jsonl] [--mc FILE|FOLDER ...] [--mc-limit N] [--tokenizer DIR]

MODEL is a .pth / HF dir (torch) or a directory with model.onnx + model.json (onnxruntime, the daemon's format).
--ppl: perplexity over {"text"} lines (or the assistant turns of {"conversations"} lines).
--mc: multiple choice in the C-Eval, CMMLU, MMLU or ARC/OpenBookQA layout (training/mc.py), a file or a folder
of subject files: the prediction is the letter (A, B, ...) with the highest next-token probability after the
prompt. A folder is reported per subject, as the mean over subjects and overall with its 95% confidence
interval and the chance level; a table in the shape of the MiniMind README's goes to stderr, the figures to
the JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from training.cli import command_parser, report_errors, setup_logging
from training.data import (
    GENERATION_TOKENIZERS,
    JsonlFile,
    encode_pretrain,
    encode_sft,
    has_think_tokens,
    load_tokenizer,
    render_chat,
)
from training.mc import (
    CHINESE,
    LETTERS,
    Question,
    SetSummary,
    markdown_tables,
    read_choices,
    set_name,
    subject_files,
    subject_name,
)

log = logging.getLogger(__name__)

__all__ = ["OnnxLM", "Question", "TorchLM", "choice_accuracy", "choice_predictions", "read_choices"]


class TorchLM:
    def __init__(self, path: str | Path) -> None:
        import torch

        from training.weights import load_model

        self.torch = torch
        self.model, self.config = load_model(path)
        self.eos = self.config.eos_token_id
        self.generation = self.config.generation
        self.params = sum(p.numel() for p in self.model.parameters())

    def logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits at every position: [len(ids), V]."""
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([ids], dtype=self.torch.long))
        return out.logits[0].float().numpy()

    def last_logits(self, ids: list[int]) -> np.ndarray:
        return self.logits(ids)[-1]

    def greedy(self, ids: list[int], max_new: int) -> list[int]:
        torch = self.torch
        out_ids: list[int] = []
        with torch.no_grad():
            out = self.model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
            for _ in range(max_new):
                nxt = int(out.logits[0, -1].argmax())
                if nxt == self.eos:
                    break
                out_ids.append(nxt)
                out = self.model(
                    torch.tensor([[nxt]]),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
        return out_ids


class OnnxLM:
    """onnxruntime over the exported contract: input_ids + past_key/value.{i} in, logits (last) + presents out."""

    def __init__(self, directory: str | Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        directory = Path(directory)
        manifest_path = directory / "model.json"
        if not (directory / "model.onnx").is_file() or not manifest_path.is_file():
            raise ModelError(f"{directory} has no model.onnx + model.json (export it with assistant-export)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if "io" in manifest:
            raise ModelError(
                f"{manifest_path}: graph I/O variant {manifest['io']!r} is not supported by training.eval"
            )
        arch = manifest["architecture"]
        self.layers = int(arch["num_hidden_layers"])
        self.kv_heads = int(arch["num_key_value_heads"])
        self.head_dim = int(arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"])
        self.eos = int(manifest.get("eos_token_id", 2))
        self.generation = str(manifest.get("generation", "minimind2"))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the fused graph's optional input warns once per session otherwise
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(directory / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def _empty_past(self) -> dict[str, np.ndarray]:
        shape = (1, self.kv_heads, 0, self.head_dim)
        past = {}
        for i in range(self.layers):
            past[f"past_key.{i}"] = np.zeros(shape, np.float32)
            past[f"past_value.{i}"] = np.zeros(shape, np.float32)
        return past

    def _step(self, ids: list[int], past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outputs = self.session.run(None, {"input_ids": np.asarray([ids], np.int64), **past})
        names = [o.name for o in self.session.get_outputs()]
        by_name = dict(zip(names, outputs, strict=True))
        new_past = {}
        for i in range(self.layers):
            new_past[f"past_key.{i}"] = by_name[f"present_key.{i}"]
            new_past[f"past_value.{i}"] = by_name[f"present_value.{i}"]
        return by_name["logits"][0], new_past

    def last_logits(self, ids: list[int]) -> np.ndarray:
        return self._step(ids, self._empty_past())[0]

    def logits(self, ids: list[int]) -> np.ndarray:
        """Every position, one decode step each (the graph returns the last position only)."""
        past = self._empty_past()
        rows = []
        for token in ids:
            logits, past = self._step([token], past)
            rows.append(logits)
        return np.stack(rows)

    def greedy(self, ids: list[int], max_new: int) -> list[int]:
        logits, past = self._step(ids, self._empty_past())
        out: list[int] = []
        for _ in range(max_new):
            nxt = int(np.argmax(logits))
            if nxt == self.eos:
                break
            out.append(nxt)
            logits, past = self._step([nxt], past)
        return out


def open_model(path: str | Path, *, threads: int = 0) -> TorchLM | OnnxLM:
    p = Path(path)
    if p.is_dir() and (p / "model.onnx").is_file():
        return OnnxLM(p, threads=threads)
    return TorchLM(p)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def perplexity(
    lm: TorchLM | OnnxLM, path: str | Path, tokenizer, *, max_length: int = 512, limit: int = 0
) -> tuple[float, int]:
    """exp(mean NLL) over the target tokens of the file, and the number of tokens."""
    file = JsonlFile(path)
    nll, count = 0.0, 0
    for i in range(len(file) if limit <= 0 else min(limit, len(file))):
        record = file.read(i)
        encoder = encode_pretrain if "text" in record else encode_sft
        try:
            enc = encoder(record, tokenizer, max_length)
        except ValueError as exc:
            file.bad(i, str(exc))
            continue
        logp = _log_softmax(lm.logits(enc.ids[:-1]))  # position t predicts token t+1
        for t in range(1, len(enc.ids)):
            if enc.weights[t] > 0:
                nll -= logp[t - 1, enc.ids[t]]
                count += 1
    return (math.exp(nll / count) if count else float("nan")), count


def mc_prompt(q: Question, *, chat: bool, think: bool = False) -> str:
    """The question, its lettered choices and 答案： (C-Eval, CMMLU) or Answer: (MMLU, ARC/OpenBookQA);
    `think`: minimind-3's chat template (the empty thinking block before the answer)."""
    cue = "答案：" if q.layout in CHINESE else "Answer:"
    lines = [f"{k}. {c}" for k, c in zip(LETTERS, q.choices, strict=False)]  # LETTERS is the longer
    body = q.question + "\n" + "\n".join(lines) + "\n" + cue
    if not chat:
        return body
    text, _ = render_chat([{"role": "user", "content": body}], add_generation_prompt=True, think=think)
    return text


def choice_results(lm: TorchLM | OnnxLM, questions: list[Question], tokenizer, *, chat: bool = True) -> list[bool]:
    """Whether each question's highest-scoring letter is its answer."""
    predicted = choice_predictions(lm, questions, tokenizer, chat=chat)
    return [p == q.answer for p, q in zip(predicted, questions, strict=True)]


def choice_predictions(
    lm: TorchLM | OnnxLM, questions: list[Question], tokenizer, *, chat: bool = True
) -> list[str]:
    """Each question's highest-scoring letter (two forms of one model are compared question by question)."""
    think = has_think_tokens(tokenizer)
    out = []
    for q in questions:
        letters = LETTERS[: len(q.choices)]
        letter_ids = [tokenizer.token_to_id(k) for k in letters]
        if None in letter_ids:
            raise ModelError(f"the tokenizer has no single tokens for {'/'.join(letters)}")
        ids = tokenizer.encode(mc_prompt(q, chat=chat, think=think), add_special_tokens=False).ids
        logits = lm.last_logits(ids)
        out.append(letters[int(np.argmax(logits[letter_ids]))])
    return out


def choice_accuracy(
    lm: TorchLM | OnnxLM, questions: list[Question], tokenizer, *, chat: bool = True
) -> float:
    results = choice_results(lm, questions, tokenizer, chat=chat)
    return sum(results) / len(results) if results else float("nan")


def score_set(
    lm: TorchLM | OnnxLM, path: str | Path, tokenizer, *, chat: bool = True, limit: int = 0
) -> SetSummary:
    """A file (one subject) or a folder (a subject per file), `limit` questions per subject (0: all)."""
    root = Path(path)
    subjects: dict[str, tuple[int, int]] = {}
    chances: list[float] = []
    for file in subject_files(root):
        questions = read_choices(file)
        questions = questions[:limit] if limit > 0 else questions
        results = choice_results(lm, questions, tokenizer, chat=chat)
        subjects[subject_name(file, root)] = (sum(results), len(results))
        chances += [1 / len(q.choices) for q in questions]
        log.info("accuracy %.4f on %d questions of %s", sum(results) / max(len(results), 1), len(results), file)
    return SetSummary(subjects, sum(chances) / len(chances) if chances else float("nan"))


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = command_parser("python -m training.eval", __doc__)
    parser.add_argument("model", help=".pth / HF dir (torch) or exported dir with model.onnx (onnxruntime)")
    parser.add_argument(
        "--tokenizer", default="", help="tokenizer dir (default: the model dir's, else MiniMind2's)"
    )
    parser.add_argument("--ppl", action="append", default=[], help="jsonl file for perplexity (repeatable)")
    parser.add_argument(
        "--mc", action="append", default=[], help="multiple-choice file or folder (C-Eval, CMMLU, MMLU, ARC/OBQA)"
    )
    parser.add_argument("--mc-limit", type=int, default=0, help="questions per multiple-choice file (0: all)")
    parser.add_argument(
        "--no-chat", action="store_true", help="multiple-choice prompts without the chat template"
    )
    parser.add_argument("--max-length", type=int, default=512, help="tokens per perplexity record")
    parser.add_argument("--limit", type=int, default=0, help="records per perplexity file (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: default)")
    args = parser.parse_args(argv)
    return report_errors("training.eval", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> None:
    """Score args.model on every --ppl and --mc file; print one JSON line of results."""
    model_dir = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    lm = open_model(args.model, threads=args.threads)
    beside = str(model_dir) if (model_dir / "tokenizer.json").is_file() else ""
    tok_path = args.tokenizer or beside or str(GENERATION_TOKENIZERS[lm.generation])
    tokenizer = load_tokenizer(tok_path)
    if has_think_tokens(tokenizer) != (lm.generation == "minimind3"):
        raise ModelError(
            f"tokenizer {tok_path} is not the tokenizer of {args.model} (a {lm.generation} model; the "
            "<think>/</think> special tokens tell the two generations' tokenizers apart)"
        )
    results: dict[str, object] = {}
    for path in args.ppl:
        ppl, n = perplexity(lm, path, tokenizer, max_length=args.max_length, limit=args.limit)
        results[f"ppl:{path}"] = ppl
        log.info("perplexity %.3f over %d tokens of %s", ppl, n, path)
    sets: dict[str, SetSummary] = {}
    for path in args.mc:
        summary = score_set(lm, path, tokenizer, chat=not args.no_chat, limit=args.mc_limit)
        sets[set_name(Path(path))] = summary
        # A file keeps the plain accuracy of earlier versions; a folder gets the whole summary.
        results[f"mc:{path}"] = summary.to_dict() if Path(path).is_dir() else summary.overall
        lo, hi = summary.ci95
        log.info(
            "%s: %.4f overall (95%% CI %.4f-%.4f, chance %.4f) on %d questions, %.4f mean over %d subjects",
            path, summary.overall, lo, hi, summary.chance, summary.questions, summary.mean_over_subjects,
            len(summary.subjects),
        )  # fmt: skip
    if sets:
        params = getattr(lm, "params", None)
        print(markdown_tables(args.model, f"{params / 1e6:.2f}M" if params else "-", sets), file=sys.stderr)
    print(json.dumps({"model": args.model, **results}, ensure_ascii=False))


if __name__ == "__main__":
    raise SystemExit(main())
