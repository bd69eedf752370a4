"""TTS: Piper (tts.engine piper, the en_US-joe-medium voice) against espeak-ng on the same replies.

For each reply the text is handed over sentence by sentence, as the daemon does while the model streams: the
clock starts when the first sentence is complete (t0) and stops when the first audio sample of the reply reaches
the output (first audio). Each engine runs through the daemon's own Speech object into an output that records
when audio arrives (unpaced, so playback time does not hide synthesis). Also measured: the real-time factor
(synthesis time / seconds of audio, over all sentences) and the memory of a worker process holding the engine.

Engines: espeak-ng, Piper as the assistant runs it (each sentence cut into chunks, the first one short), and Piper
making each sentence in one piece (piper-whole, the baseline for the chunking). Each engine lives in its own
worker process (honest RSS: the worker's resident set before and after loading the engine; for espeak-ng also the
peak of its per-sentence child processes), and the engines take turns round by round, each going first in turn,
so a change in the machine's load hits them all.

The replies: five English answers from the shared LLaMA-Factory identity set ({{name}}/{{author}} filled in) and
five built from the first ARC-Easy questions ("<gold answer>. <question>"), which have long first sentences.

    .venv/bin/python -m bench.tts [--rounds 3] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve() / "assets" / "datasets"
IDENTITY = DATASETS / "llamafactory-demo" / "identity.json"
ARC_EASY = DATASETS / "arc-openbookqa" / "arc_easy.jsonl"
ENGINES = ("espeak", "piper", "piper-whole")  # piper-whole: each sentence made in one piece, as Piper does
TARGET_FIRST_AUDIO_MS = 250.0  # issue 13: first audio <= 250 ms after the first sentence is complete


def replies(count: int = 10) -> list[str]:
    half = count // 2
    identity = json.loads(IDENTITY.read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(r["output"] for r in identity if r["output"].isascii()))
    texts = [t.replace("{{name}}", "Edge").replace("{{author}}", "the edge assistant project") for t in texts]
    out = texts[:half]
    with ARC_EASY.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            question = row["query"].removeprefix("Question: ").strip()
            answer = row["choices"][row["gold"]].strip().rstrip(".")
            out.append(f"{answer[0].upper()}{answer[1:]}. {question}")
            if len(out) == count:
                break
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ClockOutput:
    """An AudioOutput that notes when the first sample arrives and counts the audio (no playback wait)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.first_cpu: float | None = None  # this process's CPU time (all threads) then
        self.samples = 0
        self.rate = 0

    def play(self, samples: np.ndarray, sample_rate: int, stop: threading.Event | None = None) -> None:
        if self.first is None and len(samples):
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
        self.samples += len(samples)
        self.rate = sample_rate

    def close(self) -> None:
        pass


class WholeSentences:
    """The same voice without `stream`: Speech then makes each sentence in one piece (the chunking's baseline)."""

    def __init__(self, voice: Any) -> None:
        self.name = voice.name + "-whole"
        self.synthesize = voice.synthesize


def worker(engine: str, threads: int) -> None:
    """Loads one engine, then answers each 'run' line on stdin with one JSON line of measurements."""
    from assistant.reply.sinks import SentenceSplitter, Speech
    from assistant.reply.tts import make_synthesizer
    from assistant.settings import TtsSettings

    texts = replies()
    rss_before = _rss_mb()
    started = time.perf_counter()
    synthesizer = make_synthesizer(TtsSettings(engine=engine.removesuffix("-whole"), num_threads=threads))
    load_ms = (time.perf_counter() - started) * 1000
    assert synthesizer is not None
    if engine.endswith("-whole"):
        synthesizer = WholeSentences(synthesizer)
    Speech(synthesizer, ClockOutput()).speak("Warm up.")  # first-run costs (page cache, allocator) out of the way
    print(json.dumps({"ready": True, "load_ms": load_ms, "rss_before_mb": rss_before}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        rows = []
        for text in texts:
            output = ClockOutput()
            speech = Speech(synthesizer, output)
            splitter = SentenceSplitter()
            sentences = splitter.feed(text)
            rest = splitter.flush()
            sentences += [rest] if rest else []
            t0 = time.perf_counter()  # the first sentence is complete: the daemon hands it to speech now
            c0 = time.process_time()
            for sentence in sentences:
                speech.speak(sentence)
            total = time.perf_counter() - t0
            audio_s = output.samples / output.rate
            first_ms = ((output.first or t0) - t0) * 1000
            first_cpu_ms = ((output.first_cpu or c0) - c0) * 1000
            rows.append({"first_ms": first_ms, "first_cpu_ms": first_cpu_ms, "synth_s": total, "audio_s": audio_s,
                         "rate": output.rate, "sentences": len(sentences), "words": len(text.split())})
        children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"rows": rows, "rss_mb": _rss_mb(), "peak_rss_mb": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024, "children_peak_mb": children_mb}), flush=True)


def _start(engine: str, threads: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.tts", "--worker", engine, "--threads", str(threads)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def _ask(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("run\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="tts.num_threads for piper (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return

    print(f"cpu: {_cpu()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"load average at start: {_load()}")
    texts = replies()
    print(f"{len(texts)} replies, {sum(len(t.split()) for t in texts)} words; piper threads {args.threads}")
    workers = {}
    ready = {}
    for engine in ENGINES:
        workers[engine], ready[engine] = _start(engine, args.threads)
    rows: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
    last: dict[str, dict[str, Any]] = {}
    try:
        for r in range(args.rounds):
            order = ENGINES[r % len(ENGINES):] + ENGINES[:r % len(ENGINES)]  # each engine goes first in turn
            for engine in order:
                result = _ask(workers[engine])
                rows[engine] += result["rows"]
                last[engine] = result
    finally:
        for proc in workers.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
    print(f"load average at end: {_load()}\n")

    summary: dict[str, Any] = {"cpu": _cpu(), "cores": os.cpu_count(), "rounds": args.rounds,
                               "replies": len(texts), "threads": args.threads, "load_end": _load(), "engines": {}}
    print("| engine | first audio median (ms) | p90 | max | CPU time to first audio, median (ms) | RTF | audio per "
          "reply (s) | load (ms) | worker RSS before -> after (MB) | child peak (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for engine in ENGINES:
        firsts = sorted(row["first_ms"] for row in rows[engine])
        rtf = sum(row["synth_s"] for row in rows[engine]) / sum(row["audio_s"] for row in rows[engine])
        audio = statistics.mean(row["audio_s"] for row in rows[engine])
        p90 = firsts[min(len(firsts) - 1, round(0.9 * (len(firsts) - 1)))]
        # CPU time of the worker (all its threads) from t0 to the first sample: what first audio costs on an idle
        # machine, where the wall time is its own CPU time; the wall time above adds the wait for a busy core.
        # espeak-ng works in a child process, whose CPU time is not counted here (its wall time is the figure).
        cpu = statistics.median(row["first_cpu_ms"] for row in rows[engine])
        stats = {
            "first_audio_ms_median": statistics.median(firsts), "first_audio_ms_p90": p90,
            "first_audio_ms_max": firsts[-1], "first_audio_cpu_ms_median": cpu, "rtf": rtf, "audio_s_per_reply": audio,
            "load_ms": ready[engine]["load_ms"], "rss_before_mb": ready[engine]["rss_before_mb"],
            "rss_mb": last[engine]["rss_mb"], "children_peak_mb": last[engine]["children_peak_mb"],
            "rate": rows[engine][0]["rate"],
        }
        summary["engines"][engine] = stats
        print(f"| {engine} | {stats['first_audio_ms_median']:.0f} | {p90:.0f} | {firsts[-1]:.0f} | {cpu:.0f} | "
              f"{rtf:.3f} | {audio:.2f} | {stats['load_ms']:.0f} | {stats['rss_before_mb']:.0f} -> "
              f"{stats['rss_mb']:.0f} | {stats['children_peak_mb']:.0f} |")
    piper = summary["engines"]["piper"]
    verdict = "met" if piper["first_audio_ms_p90"] <= TARGET_FIRST_AUDIO_MS else "NOT met"
    print(f"\ntarget first audio <= {TARGET_FIRST_AUDIO_MS:.0f} ms (piper, p90 over {len(rows['piper'])} replies): "
          f"{verdict} ({piper['first_audio_ms_p90']:.0f} ms; espeak-ng baseline "
          f"{summary['engines']['espeak']['first_audio_ms_p90']:.0f} ms)")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
