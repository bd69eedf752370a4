"""`assistant ask "question"`: one question to MiniMind, the reply streamed to stdout.

The text path to the same Conversation the voice daemon uses. With `--json`, one JSON object per line:
`{"event": "first_token", "ms": ...}` when the first token exists, `{"event": "token", "text": ...}` for each
piece of text, and last `{"event": "reply", "text": ..., "tokens": ..., "ttft_ms": ..., "tokens_per_s": ...}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from assistant.chat import Conversation
from assistant.exitcodes import ConfigError
from assistant.llm import MiniMindOnnx
from assistant.sampling import Sampling
from assistant.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path("models/minimind")
DEMO_MODEL_DIR = Path("models/minimind-demo")
_DEFAULTS = Sampling()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help='the question; "-" reads it from stdin')
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help=f"exported model folder (default {DEFAULT_MODEL_DIR}, or {DEMO_MODEL_DIR} if only that exists)",
    )
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, metavar="N")
    parser.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    parser.add_argument("--top-p", type=float, default=_DEFAULTS.top_p)
    parser.add_argument("--top-k", type=int, default=_DEFAULTS.top_k, help="0 = off")
    parser.add_argument("--repetition-penalty", type=float, default=_DEFAULTS.repetition_penalty)
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    parser.add_argument("--system", default=DEFAULT_SYSTEM_PROMPT, help="system prompt")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--max-context-tokens", type=int, default=None, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log timings to stderr")


def resolve_model_dir(explicit: Path | None) -> Path:
    """The explicit folder, else models/minimind, else the demo model when only that one exists."""
    if explicit is not None:
        return explicit
    if not DEFAULT_MODEL_DIR.exists() and DEMO_MODEL_DIR.exists():
        return DEMO_MODEL_DIR
    return DEFAULT_MODEL_DIR


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    question = sys.stdin.read().strip() if args.question == "-" else args.question
    if not question:
        raise ConfigError("empty question: give it as an argument or on stdin with `assistant ask -`")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be at least 1")
    sampling = Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        greedy=args.greedy,
    )
    model_dir = resolve_model_dir(args.model_dir)
    model = MiniMindOnnx(model_dir, threads=args.threads, max_context_tokens=args.max_context_tokens)
    tokenizer = Tokenizer(model_dir / model.manifest.tokenizer)
    conversation = Conversation(
        model, tokenizer, system_prompt=args.system, max_context_tokens=args.max_context_tokens
    )
    pieces: list[str] = []
    for piece in conversation.stream(question, sampling):
        if args.json:
            if not pieces:
                _emit({"event": "first_token", "ms": _round(conversation.first_token_ms)})
            _emit({"event": "token", "text": piece})
        else:
            sys.stdout.write(piece)
            sys.stdout.flush()
        pieces.append(piece)
    stats = conversation.last_stats
    if args.json:
        if not pieces:
            _emit({"event": "first_token", "ms": _round(conversation.first_token_ms)})
        _emit(
            {
                "event": "reply",
                "text": "".join(pieces),
                "tokens": stats.tokens,
                "prompt_tokens": stats.prompt_tokens,
                "ttft_ms": _round(stats.ttft_ms),
                "tokens_per_s": _round(stats.tokens_per_s),
            }
        )
    else:
        sys.stdout.write("\n")
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
