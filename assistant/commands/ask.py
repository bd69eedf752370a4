"""`assistant ask "question"`: one question to MiniMind, the reply streamed to stdout.

The text path to the same Conversation the voice daemon uses. With `--json`, one JSON object per line:
`{"event": "first_token", "ms": ...}` when the first token exists, `{"event": "token", "text": ...}` for each
piece of text, and last `{"event": "reply", "text": ..., "tokens": ..., "ttft_ms": ..., "tokens_per_s": ...}`.
A minimind-3 model's `<think>` block is never part of the text; `--json --show-thinking` adds it to the reply
event as "thinking" (`--think` lets the model open one: the template's open_thinking).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from assistant.errors import ConfigError
from assistant.llm.sampling import sampling_from
from assistant.pipeline import build_chat
from assistant.settings import DEFAULT_CONFIG, find_config, load_settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help='the question; "-" reads it from stdin')
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"settings file, as for `run` (default: {DEFAULT_CONFIG} if it exists); its llm: section applies",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="exported model folder [llm.model_dir] (default <models_dir>/<llm.model>, or the demo model if only "
        "that is installed)",
    )
    parser.add_argument("--greedy", action="store_true", default=None, help="always take the most likely token")
    parser.add_argument("--max-new-tokens", type=int, metavar="N", help="[llm.max_new_tokens]")
    parser.add_argument("--temperature", type=float, help="[llm.temperature]")
    parser.add_argument("--top-p", type=float, help="[llm.top_p]")
    parser.add_argument("--top-k", type=int, help="0 = off [llm.top_k]")
    parser.add_argument("--repetition-penalty", type=float, help="[llm.repetition_penalty]")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random) [llm.seed]")
    parser.add_argument("--system", help="system prompt [llm.system_prompt]")
    parser.add_argument("--threads", type=int, help="onnxruntime threads [llm.threads]")
    parser.add_argument("--max-context-tokens", type=int, metavar="N", help="[llm.max_context_tokens]")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--think", action="store_true", default=None, help="minimind-3: open_thinking on [llm.open_thinking]"
    )
    parser.add_argument(
        "--show-thinking", action="store_true", help='with --json: the <think> block as the reply\'s "thinking"'
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log timings to stderr")


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    """Command-line flags as dotted settings keys (None: not given, the config file decides)."""
    return {
        "llm.model_dir": args.model_dir,
        "llm.greedy": args.greedy,
        "llm.max_new_tokens": args.max_new_tokens,
        "llm.temperature": args.temperature,
        "llm.top_p": args.top_p,
        "llm.top_k": args.top_k,
        "llm.repetition_penalty": args.repetition_penalty,
        "llm.seed": args.seed,
        "llm.system_prompt": args.system,
        "llm.threads": args.threads,
        "llm.max_context_tokens": args.max_context_tokens,
        "llm.open_thinking": args.think,
    }


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    settings = load_settings(find_config(args.config), overrides_from(args))
    question = sys.stdin.read().strip() if args.question == "-" else args.question
    if not question:
        raise ConfigError("empty question: give it as an argument or on stdin with `assistant ask -`")
    sampling = sampling_from(settings.llm)
    log.info("model %s", settings.llm_model_dir())
    conversation = build_chat(settings)
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
        reply = {
            "event": "reply",
            "text": "".join(pieces),
            "tokens": stats.tokens,
            "prompt_tokens": stats.prompt_tokens,
            "ttft_ms": _round(stats.ttft_ms),
            "tokens_per_s": _round(stats.tokens_per_s),
        }
        if args.show_thinking:
            reply["thinking"] = conversation.last_thinking
        _emit(reply)
    else:
        sys.stdout.write("\n")
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
