"""Follow-up time to first token: a warm turn (the last reply's KV cache kept) against a cold prompt of the
same length, MiniMind2-Small-shaped random weights exported like bench/llm.py (int8 and fp32).

The history is ~300 tokens: the system prompt, one question and a greedy reply long enough to reach it, then
`Conversation.warm_up()` (what the daemon does while the reply is spoken). The follow-up question is then
answered twice per round, warm and cold (`keep_cache = False`: the same prompt ids, all prefilled), in
alternating order, each after a short pause; the median of --runs is reported. Time to first token is
`ReplyStats.ttft_ms`: stream() call -> first generated token (prompt assembly and prefill included). The
greedy tokens of the two are compared every round.

    .venv/bin/python -m bench.followup [--runs 7] [--history 300] [--threads 2] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.cpu import describe_cpu
from bench.llm import export_dirs, small_model

REPO = Path(__file__).resolve().parents[1]

QUESTION = "请简单介绍一下长城的历史，以及它为什么这么有名。"
FOLLOW_UP = "那它有多长？"
PAUSE_S = 0.2


def one_model(model_dir: Path, runs: int, history: int, threads: int) -> dict:
    from assistant.llm.chat import Conversation
    from assistant.llm.runtime import MiniMindOnnx
    from assistant.llm.sampling import Sampling
    from assistant.llm.tokenizer import Tokenizer

    model = MiniMindOnnx(model_dir, threads=threads)
    tok = Tokenizer.from_dir(model_dir)
    chat = Conversation(model, tok, max_context_tokens=1024)
    base = len(chat.prompt_ids(QUESTION, Sampling(max_new_tokens=8))[0])
    first = Sampling(greedy=True, max_new_tokens=max(8, history - base - 2))
    follow = Sampling(greedy=True, max_new_tokens=8)
    warm_ms: list[float] = []
    cold_ms: list[float] = []
    same = 0
    prompt_len = cached = 0
    for i in range(runs):
        for warm_first in ((True, False) if i % 2 == 0 else (False, True)):
            chat.keep_cache = True
            chat.clear()
            list(chat.stream(QUESTION, first))
            chat.warm_up()
            chat.keep_cache = warm_first
            time.sleep(PAUSE_S)
            text = "".join(chat.stream(FOLLOW_UP, follow))
            stats = chat.last_stats
            (warm_ms if warm_first else cold_ms).append(stats.ttft_ms)
            if warm_first:
                warm_text, prompt_len, cached = text, stats.prompt_tokens, stats.cached_tokens
            else:
                cold_text = text
        same += warm_text == cold_text
    history_tokens = prompt_len - len(tok.message_ids("user", tok.encode(FOLLOW_UP))) - 3
    return {
        "model": str(model_dir.name),
        "history_tokens": history_tokens,
        "prompt_tokens": prompt_len,
        "cached_tokens": cached,
        "warm_ttft_ms": statistics.median(warm_ms),
        "cold_ttft_ms": statistics.median(cold_ms),
        "ratio": statistics.median(warm_ms) / statistics.median(cold_ms),
        "same_tokens": f"{same}/{runs}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--history", type=int, default=300, help="history tokens before the follow-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="export into this folder and keep it (else a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if not (root / "int8" / "model.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            export_dirs(small_model(args.seed), root)
        rows = [one_model(root / name, args.runs, args.history, args.threads) for name in ("int8", "fp32")]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(describe_cpu())
    print(f"follow-up TTFT, {args.history}-token history target, {args.threads} threads, median of {args.runs}")
    print(f"{'model':6} {'history':>7} {'prompt':>6} {'cached':>6} {'warm ms':>8} {'cold ms':>8} {'warm/cold':>9} "
          f"{'same tokens':>11}")
    for r in rows:
        print(f"{r['model']:6} {r['history_tokens']:7d} {r['prompt_tokens']:6d} {r['cached_tokens']:6d} "
              f"{r['warm_ttft_ms']:8.1f} {r['cold_ttft_ms']:8.1f} {r['ratio']:9.2f} {r['same_tokens']:>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
