"""`assistant ask "question"`: one question to MiniMind, the reply streamed to stdout.

The text path to the same Conversation the voice daemon uses. With `--json`, one JSON object per line:
`{"event": "first_token", "ms": ...}` when the first token exists, `{"event": "token", "text": ...}` for each
piece of text, and last `{"event": "reply", "text": ..., "tokens": ..., "ttft_ms": ..., "tokens_per_s": ...,
"intent": null}`.

The question goes through the daemon's intent layer first (pipeline.build_intents), so text and voice get the
same answer: an everyday question ("what time is it", "25 加 17 等于多少") is answered from its response template
without loading the model, as one `{"event": "reply", "text": ..., "intent": "HassGetCurrentTime"}`. Timers and
alarms run in the voice assistant only: here they are recognised and answered with where to set them.

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
from assistant.pipeline import build_chat, build_intents
from assistant.settings import DEFAULT_CONFIG, Settings, find_config, load_settings

log = logging.getLogger(__name__)

MAX_QUESTION_BYTES = 1 << 20  # the model sees a few hundred tokens; a bigger stdin is a mistake (`ask - < big`)


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


def read_question(arg: str) -> str:
    """The question from argv, or from stdin for "-": valid UTF-8 and not blank, else ConfigError (exit 3).

    Python hands undecodable argv bytes over as lone surrogates (surrogateescape), which the tokenizer then
    failed on with a TypeError; stdin is read as bytes and decoded strictly, so the error can name the byte.
    """
    if arg == "-":
        data = sys.stdin.buffer.read(MAX_QUESTION_BYTES + 1)  # bounded: `ask - < /dev/zero` must not eat memory
        where = "stdin"
        if len(data) > MAX_QUESTION_BYTES:
            raise ConfigError(f"the question on stdin is longer than {MAX_QUESTION_BYTES} bytes")
        try:
            question = data.decode("utf-8").removeprefix("\ufeff")  # a BOM from Windows editors is not text
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the question on stdin is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
            ) from None
    else:
        question, where = arg, "argument"
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as exc:
            char = ord(question[exc.start])
            # surrogateescape maps an undecodable byte b to U+DC00+b; other surrogates cannot come from argv
            what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"unpaired surrogate U+{char:04X}"
            raise ConfigError(f"the question argument is not valid UTF-8: {what} at character {exc.start}") from None
    question = question.strip()
    if not question:
        raise ConfigError(f"empty question ({where} is blank): give it as an argument or on stdin with "
                          "`assistant ask -`")
    return question


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    settings = load_settings(find_config(args.config), overrides_from(args))
    question = read_question(args.question)
    if _answer_by_intent(settings, question, json_lines=args.json):
        return 0
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
            "intent": None,
        }
        if args.show_thinking:
            reply["thinking"] = conversation.last_thinking
        _emit(reply)
    else:
        sys.stdout.write("\n")
    return 0


def _answer_by_intent(settings: Settings, question: str, *, json_lines: bool) -> bool:
    """Answer from the intent layer if one matches; True when answered (the model is then never loaded)."""
    import time

    from assistant.intents.handlers import Context
    from assistant.intents.timers import TimerBook

    engine = build_intents(settings, only_for=question)
    if engine is None:
        return False
    # An in-memory book, timers_live False: a timer set here would end with nobody to announce it.
    answer = engine.answer(question, Context(time.time(), TimerBook(), "en", timers_live=False))
    if answer is None:
        return False
    if json_lines:
        _emit({"event": "reply", "text": answer.text, "intent": answer.intent})
    else:
        sys.stdout.write(answer.text + "\n")
        sys.stdout.flush()
    return True


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
