"""Streaming jsonl datasets in the MiniMind formats, chat rendering with exact loss masks, and batching.

A dataset never holds the file: it keeps one byte offset per line (8 bytes a line, ~11 MB for the 1.6 GB
pretrain_hq.jsonl) and reads a record with one seek when a batch needs it. The order of examples is a pure
function of (seed, global sample index), so every rank, every resume and every world size agrees on which
sample comes next without any data-loader state.

Why ~360 lines: the four MiniMind data formats share the jsonl reader and the loss masks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from assistant.errors import ConfigError

log = logging.getLogger(__name__)

IGNORE = -100  # label value that cross-entropy skips
PAD_ID = 0  # <|endoftext|>
DEFAULT_SYSTEM = "You are a helpful assistant"  # what MiniMind2's chat template inserts when no system turn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "assets" / "minimind-tokenizer" / "minimind2"
# The tokenizer of each model generation (training.model.GENERATIONS); minimind-3 has its own.
GENERATION_TOKENIZERS = {
    "minimind2": DEFAULT_TOKENIZER,
    "minimind3": REPO.parent / "shared" / "assets" / "minimind-tokenizer" / "minimind-3",
}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def has_think_tokens(tokenizer: Tokenizer) -> bool:
    """The minimind-3 tokenizer (its chat template wraps every assistant turn in a thinking block)."""
    return tokenizer.token_to_id(THINK_OPEN) is not None and tokenizer.token_to_id(THINK_CLOSE) is not None


class DataError(ConfigError):
    """A data file the user has to fix (named with its line number)."""


def load_tokenizer(path: str | os.PathLike[str] = "") -> Tokenizer:
    """tokenizer.json from a directory (or the file itself); default: the MiniMind2 tokenizer beside the repo."""
    p = Path(path) if path else DEFAULT_TOKENIZER
    file = p / "tokenizer.json" if p.is_dir() or not p.suffix else p
    if not file.is_file():
        raise ConfigError(
            f"tokenizer not found: {file} (give --tokenizer DIR with tokenizer.json, "
            "or train one with `python -m training.tokenizer`)"
        )
    return Tokenizer.from_file(str(file))


# ---------------------------------------------------------------------------------------------- jsonl files


class JsonlFile:
    """Random access to the lines of a jsonl file through a byte-offset index."""

    def __init__(self, path: str | os.PathLike[str], *, on_bad_line: str = "error") -> None:
        if on_bad_line not in ("error", "skip"):
            raise ConfigError(f"on_bad_line must be 'error' or 'skip', not {on_bad_line!r}")
        self.path = Path(path)
        self.on_bad_line = on_bad_line
        self.bad_lines = 0
        if not self.path.is_file():
            raise DataError(f"data file not found: {self.path}")
        offsets: list[int] = []
        line_numbers: list[int] = []
        pos = 0
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if raw.strip():
                    offsets.append(pos)
                    line_numbers.append(number)
                pos += len(raw)
        if not offsets:
            raise DataError(f"{self.path}: no records (the file is empty)")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.line_numbers = np.asarray(line_numbers, dtype=np.int64)
        self._fh = None
        log.info("indexed %s: %d records, %d bytes", self.path, len(self.offsets), pos)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:  # file handles do not pickle; reopen lazily
        return {**self.__dict__, "_fh": None}

    def line_number(self, index: int) -> int:
        return int(self.line_numbers[index])

    def read(self, index: int) -> dict[str, Any] | None:
        """The record at `index`, or None for a malformed line when skipping (it is logged with its line)."""
        if self._fh is None:
            self._fh = self.path.open("rb")
        self._fh.seek(int(self.offsets[index]))
        raw = self._fh.readline()
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("a line must hold one JSON object")
            return record
        except (ValueError, UnicodeDecodeError) as exc:
            return self.bad(index, f"malformed JSON ({exc})")

    def bad(self, index: int, why: str) -> None:
        where = f"{self.path}:{self.line_number(index)}"
        if self.on_bad_line == "error":
            raise DataError(f"{where}: {why} (fix the line, or pass --on-bad-line skip)")
        self.bad_lines += 1
        log.warning("skipping %s: %s", where, why)
        return None


def sample_indices(n: int, start: int, count: int, *, seed: int) -> list[int]:
    """Indices of samples [start, start+count) of an endless stream: one seeded permutation per epoch."""
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(count - len(out), n - offset)
        out.extend(int(i) for i in perm[offset : offset + take])
        pos += take
    return out


# ---------------------------------------------------------------------------------------------- chat renderin


def render_chat(
    messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False, think: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """ChatML text as MiniMind2's template renders it, plus the character spans the assistant must learn.

    Each span covers an assistant turn's content and its closing <|im_end|> (the model must learn to stop).
    `think` renders minimind-3's template instead: each assistant turn is `<think>\n{reasoning}\n</think>\n\n`
    + its content (reasoning: what a `...</think>` prefix of the content holds, else empty), the block inside the
    span; the generation prompt ends with the empty block (open_thinking off).
    """
    msgs = list(messages)
    for msg in msgs:
        if not isinstance(msg, dict):
            raise ValueError(f"a message must be an object with role and content, got {msg!r:.80}")
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0

    def add(text: str) -> None:
        nonlocal length
        parts.append(text)
        length += len(text)

    if not msgs or msgs[0].get("role") != "system":
        add(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for msg in msgs:
        role = msg.get("role")
        content = msg.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(
                f"a message needs role system/user/assistant and string content, got {msg!r:.80}"
            )
        add(f"<|im_start|>{role}\n")
        start = length
        if think and role == "assistant":
            reasoning = ""
            if THINK_CLOSE in content:  # as the official template: reasoning up to </think>, after <think>
                reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
                content = content.split(THINK_CLOSE)[-1].lstrip("\n")
            content = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{content.lstrip(chr(10))}"
        add(f"{content}<|im_end|>")
        if role == "assistant":
            spans.append((start, length))
        add("\n")
    if add_generation_prompt:
        add("<|im_start|>assistant\n" + (f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n" if think else ""))
    return "".join(parts), spans


@dataclass
class Encoded:
    """One tokenized example: ids, per-position target weight (0 = no loss), and truncation flag."""

    ids: list[int]
    weights: list[float]
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def encode_spans(
    tokenizer: Tokenizer,
    text: str,
    spans: Sequence[tuple[int, int]],
    *,
    max_length: int,
    tag_spans: Sequence[tuple[int, int]] = (),
    tag_weight: float = 1.0,
) -> Encoded:
    """Tokenize `text`; a token is a target when it starts inside a span (weight tag_weight inside a tag span).

    `weights[i]` is the weight of predicting token i (from position i-1); the first token is never a target.
    """
    enc = tokenizer.encode(text, add_special_tokens=False)
    ids = list(enc.ids)
    weights = [0.0] * len(ids)
    for i, (start, _end) in enumerate(enc.offsets):
        if i == 0:
            continue
        if any(a <= start < b for a, b in spans):
            weights[i] = tag_weight if any(a <= start < b for a, b in tag_spans) else 1.0
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], weights[:max_length], truncated)


def tag_spans_in(text: str, spans: Sequence[tuple[int, int]], tags: Sequence[str]) -> list[tuple[int, int]]:
    out = []
    for a, b in spans:
        for tag in tags:
            pos = text.find(tag, a, b)
            while pos >= 0:
                out.append((pos, pos + len(tag)))
                pos = text.find(tag, pos + len(tag), b)
    return out


# ---------------------------------------------------------------------------------------------- record encode
# Each takes one json record and returns Encoded, or raises ValueError naming what is wrong with the record.


def encode_pretrain(record: dict[str, Any], tokenizer: Tokenizer, max_length: int) -> Encoded:
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError('expected {"text": "..."}')
    # MiniMind frames each document as <|im_start|> text <|im_end|>, so the model learns where text ends.
    ids = [1, *tokenizer.encode(text, add_special_tokens=False).ids, 2]
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    return Encoded(ids, [0.0] + [1.0] * (len(ids) - 1), truncated)


def _conversations(record: dict[str, Any], key: str = "conversations") -> list[dict[str, Any]]:
    conv = record.get(key)
    if not isinstance(conv, list) or not conv:
        raise ValueError(f'expected {{"{key}": [{{"role": ..., "content": ...}}, ...]}}')
    return conv


def encode_sft(record: dict[str, Any], tokenizer: Tokenizer, max_length: int) -> Encoded:
    text, spans = render_chat(_conversations(record), think=has_think_tokens(tokenizer))
    if not spans:
        raise ValueError("the conversation has no assistant turn to learn")
    return encode_spans(tokenizer, text, spans, max_length=max_length)


REASON_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def make_reason_encoder(tag_weight: float) -> Callable[[dict[str, Any], Tokenizer, int], Encoded]:
    def encode_reason(record: dict[str, Any], tokenizer: Tokenizer, max_length: int) -> Encoded:
        text, spans = render_chat(_conversations(record), think=has_think_tokens(tokenizer))
        if not spans:
            raise ValueError("the conversation has no assistant turn to learn")
        tags = tag_spans_in(text, spans, REASON_TAGS)
        return encode_spans(
            tokenizer, text, spans, max_length=max_length, tag_spans=tags, tag_weight=tag_weight
        )

    return encode_reason


def encode_dpo(record: dict[str, Any], tokenizer: Tokenizer, max_length: int) -> Encoded:
    """Chosen and rejected chats; the rejected one travels in `extra`."""
    chosen = encode_sft({"conversations": _conversations(record, "chosen")}, tokenizer, max_length)
    rejected = encode_sft({"conversations": _conversations(record, "rejected")}, tokenizer, max_length)
    chosen.extra["rejected"] = rejected
    chosen.truncated = chosen.truncated or rejected.truncated
    return chosen


# ---------------------------------------------------------------------------------------------- batching


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] int64, right-padded with PAD_ID
    labels: torch.Tensor  # [B, T] int64, next token at each position, IGNORE where no loss
    weights: torch.Tensor  # [B, T] float32, loss weight of each label (0 where IGNORE)
    examples: int = 0
    truncated: int = 0

    @property
    def tokens(self) -> float:
        return float(self.weights.sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.weights.to(device),
            self.examples,
            self.truncated,
        )


def collate(items: Sequence[Encoded]) -> Batch:
    """Pad to the longest item. Position t predicts token t+1: labels are shifted left by one here."""
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(items), width), dtype=torch.float32)
    for row, e in enumerate(items):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids, dtype=torch.long)
        target_w = torch.tensor(e.weights[1:], dtype=torch.float32)  # weight of predicting ids[t+1]
        labels[row, : n - 1] = torch.where(
            target_w > 0, ids[row, 1:n], torch.full_like(ids[row, 1:n], IGNORE)
        )
        weights[row, : n - 1] = target_w
    return Batch(ids, labels, weights, len(items), sum(e.truncated for e in items))


class Dataset:
    """A jsonl file + a record encoder: reads and encodes the samples a batch asks for."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        encoder: Callable[[dict[str, Any], Tokenizer, int], Encoded],
        tokenizer: Tokenizer,
        *,
        max_length: int,
        on_bad_line: str = "error",
    ) -> None:
        self.file = JsonlFile(path, on_bad_line=on_bad_line)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.file)

    def get(self, index: int) -> Encoded | None:
        record = self.file.read(index)
        if record is None:
            return None
        try:
            return self.encoder(record, self.tokenizer, self.max_length)
        except ValueError as exc:
            return self.file.bad(index, str(exc))

    def items(self, indices: Sequence[int]) -> list[Encoded]:
        return [e for e in (self.get(i) for i in indices) if e is not None]
