"""Intent match time: how long the intent layer takes to answer (or to pass on) one utterance, beside a no-op
baseline and the cost of one language-model reply, measured in the same run.

For each utterance (English UPPERCASE as the KWS-as-ASR writes it, Chinese characters, toned pinyin, and
questions no intent matches, which go to the model after a full scan): IntentEngine.answer() with a fresh
in-memory timer book, --rounds times, interleaved; the median per utterance is reported, then the median,
95th percentile and maximum over utterances per style. Baselines in the same rounds: a no-op call (the Python
call overhead) and, once, one greedy reply of --max-new-tokens from the int8 MiniMind in --model-dir (default:
the tiny reference checkpoint exported with the project's exporter, as the tests do; its speed is that of a
MiniMind2-shaped int8 graph only if you pass a real export).

    .venv/bin/python -m bench.intents [--rounds 20] [--model-dir DIR] [--max-new-tokens 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.cpu import describe_cpu

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve()
TARGET_MS = 20.0

UTTERANCES = {
    "en": [
        "WHAT TIME IS IT", "WHAT IS THE DATE TODAY", "SET A TIMER FOR FIVE MINUTES", "IN TEN SECOND CHECK THE OVEN",
        "HOW MUCH TIME IS LEFT ON MY TIMER", "PAUSE THE TIMER", "ADD TWO MINUTES TO THE TIMER", "CANCEL THE TIMER",
        "SET AN ALARM FOR SEVEN THIRTY AM", "WHAT IS TWENTY FIVE PLUS SEVENTEEN", "CONVERT FIVE KILOMETERS TO MILES",
        "WHAT DAY OF THE WEEK IS MARCH THIRD TWO THOUSAND TWENTY SEVEN",
    ],
    "zh": [
        "现在几点", "今天几号", "设置五分钟的计时器", "计时器还剩多少时间", "暂停计时器", "计时器加两分钟",
        "取消计时器", "设置明天早上七点半的闹钟", "二十五加十七等于多少", "五公里等于多少英里",
        "二零二七年三月三号是星期几",
    ],
    "pinyin": [
        "xiàn zài jǐ diǎn", "jīntiānjǐhào", "shè zhì wǔ fēn zhōng de jì shí qì", "jìshíqìháishèngduōshǎoshíjiān",
        "zàn tíng jì shí qì", "qǔ xiāo jì shí qì", "èr shí wǔ jiā shí qī děng yú duō shǎo", "míng tiān xīng qī jǐ",
    ],
    "no match (to the model)": [
        "ASK NOT WHAT YOUR COUNTRY CAN DO FOR YOU ASK WHAT YOU CAN DO FOR YOUR COUNTRY",
        "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES", "中国最高的山是哪座", "广州市房地产中介协会分析",
        "dàjiāláitǐyàndámóyuàntuīchūdeyǔyīnshíbiémóxíng",
    ],
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _tiny_export(out: Path) -> Path:
    from export.cli import main as export_main

    checkpoint = SHARED / "reference" / "minimind2" / "minimind2-dense-tiny-random.pth"
    tokenizer = SHARED / "assets" / "minimind-tokenizer" / "minimind2"
    code = export_main([str(checkpoint), "--out", str(out), "--quant", "int8", "--tokenizer", str(tokenizer)])
    if code != 0:
        raise SystemExit("export of the tiny reference model failed")
    return out


def llm_reply_ms(model_dir: Path, max_new_tokens: int, runs: int = 3) -> tuple[float, int]:
    from assistant.llm.chat import Conversation
    from assistant.llm.runtime import MiniMindOnnx
    from assistant.llm.sampling import Sampling
    from assistant.llm.tokenizer import Tokenizer

    chat = Conversation(MiniMindOnnx(model_dir, threads=1), Tokenizer.from_dir(model_dir))
    sampling = Sampling(greedy=True, max_new_tokens=max_new_tokens)
    times, tokens = [], 0
    for _ in range(runs + 1):  # the first is a warm-up
        chat.clear()
        start = time.perf_counter()
        tokens = len(list(chat.stream("What time is it?", sampling)))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:]), tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model-dir", type=Path, help="int8 MiniMind export for the LLM baseline")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from assistant.intents.engine import IntentEngine
    from assistant.intents.handlers import Context
    from assistant.intents.timers import TimerBook

    start = time.perf_counter()
    engine = IntentEngine(("en", "zh"))
    load_ms = (time.perf_counter() - start) * 1000
    now = time.time()

    def noop(text: str, ctx: Context) -> None:
        return None

    samples: dict[tuple[str, str], list[float]] = {}
    baseline: list[float] = []
    for _ in range(args.rounds):
        for style, texts in UTTERANCES.items():
            for text in texts:
                ctx = Context(now, TimerBook(), "en")
                t0 = time.perf_counter()
                engine.answer(text, ctx)
                t1 = time.perf_counter()
                noop(text, ctx)
                t2 = time.perf_counter()
                samples.setdefault((style, text), []).append((t1 - t0) * 1000)
                baseline.append((t2 - t1) * 1000)
    per_utterance = {key: statistics.median(v) for key, v in samples.items()}

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or _tiny_export(Path(tmp) / "tiny-int8")
        reply_ms, reply_tokens = llm_reply_ms(model_dir, args.max_new_tokens)

    rows = []
    for style in UTTERANCES:
        values = [ms for (s, _), ms in per_utterance.items() if s == style]
        rows.append({"style": style, "utterances": len(values), "median_ms": statistics.median(values),
                     "p95_ms": _pct(values, 0.95), "max_ms": max(values)})
    worst = max(per_utterance.items(), key=lambda kv: kv[1])
    result = {
        "load_ms": load_ms, "rounds": args.rounds, "rows": rows,
        "all_median_ms": statistics.median(per_utterance.values()), "worst": {"text": worst[0][1], "ms": worst[1]},
        "noop_ms": statistics.median(baseline),
        "llm_reply_ms": reply_ms, "llm_reply_tokens": reply_tokens, "llm_model": str(args.model_dir or "tiny export"),
        "target_ms": TARGET_MS, "load": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
        return 0
    print(describe_cpu())
    print(f"intent engine (en + zh + pinyin) loaded and warmed in {load_ms:.0f} ms; {args.rounds} rounds; "
          f"load average {result['load']:.2f}")
    print(f"{'style':<26}{'n':>3}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}")
    for row in rows:
        print(f"{row['style']:<26}{row['utterances']:>3}{row['median_ms']:>11.2f}{row['p95_ms']:>9.2f}"
              f"{row['max_ms']:>9.2f}")
    print(f"all utterances: median {result['all_median_ms']:.2f} ms, worst {worst[1]:.2f} ms ({worst[0][1]!r}); "
          f"target <= {TARGET_MS:g} ms")
    print(f"baseline no-op call: {result['noop_ms'] * 1000:.1f} us; one LLM reply ({reply_tokens} tokens, "
          f"{result['llm_model']}): {reply_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
