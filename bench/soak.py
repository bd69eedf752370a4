"""Soak: hours of audio through the real daemon, in-process, faster than real time; does it hold?

The input is generated as it is consumed (never written out): real shared clips, pink room noise at
changing levels, stretches of digital silence, and planted wake phrases (JFK's "And so, my fellow
Americans," spliced straight before another English clip as the question). The daemon runs with the real
English KWS model (gated, as configured by default), the KWS model as streaming ASR, and an int8 export of
the tiny reference MiniMind with few new tokens, so the run is about the audio path.

Reported: planted wakes detected (recall), false wakes per hour of non-wake speech, planted wakes left
unanswered, errors, RSS sampled every --sample-s seconds of audio with its least-squares slope in MB per
hour of audio (after a warm-up of one answered question), open file descriptors and threads after warm-up
and at the end. Targets (issue #6): recall >= 95%, <= 1 false wake/h of non-wake speech, RSS growth
< 5 MB/h.

    .venv/bin/python -m bench.soak [--minutes 30] [--seed 0] [--json]

The figures per hour are per hour of audio: leaks come with chunks and utterances, not with wall time.

Why ~400 lines: the plan, the measurements (RSS, fds, threads), the scoring of wakes against the plan and
the report are one benchmark; test_soak.py runs the same code CI-sized, so it stays one importable module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpu import describe_cpu
from speechdata.assets import (
    NON_WAKE_CLIPS,
    REPO,
    TINY_CHECKPOINT,
    TOKENIZER_DIR,
    UTTERANCE_CLIPS,
    WAKE_LABEL,
    english_settings,
)
from speechdata.audio import at_gain, jfk_question, load_clip, pink_noise, silence
from speechdata.mix import Placed, Segment, chunks_of, placed_of, planted_wake

log = logging.getLogger("bench.soak")

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "assistant-bench"
DETECTION_WINDOW_S = 1.5  # a planted wake counts as found if the spotter reports it within this after it ends


# ------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What the generated audio is made of."""

    minutes: float = 30.0  # minutes of audio in all
    seed: int = 0
    noise_dbfs: float = -58.0  # room noise under everything
    gap_s: tuple[float, float] = (1.5, 8.0)  # pauses between events, seconds (uniform)
    speech_per_wake: int = 2  # non-wake clips between two planted wakes
    gain_db: tuple[float, float] = (-6.0, 3.0)  # speakers nearer and farther (uniform)


def schedule(plan: Plan) -> Iterator[Segment]:
    """Rounds of: pause, non-wake speech, pause, ..., planted wake + question, pause; until `minutes`."""
    rng = np.random.default_rng(plan.seed)
    total = plan.minutes * 60.0
    produced = 0.0
    questions = [(p.name, load_clip(p)) for p in UTTERANCE_CLIPS] + [("jfk-question", jfk_question())]
    others = [(p.name, load_clip(p)) for p in NON_WAKE_CLIPS if p.exists()]

    def noisy(segment: Segment) -> Segment:
        noise = pink_noise(segment.seconds, plan.noise_dbfs, rng)
        return Segment(segment.kind, segment.name, (segment.samples + noise).astype(np.float32))

    def pause() -> Segment:
        seconds = float(rng.uniform(*plan.gap_s))
        roll = rng.random()
        if roll < 0.1:  # a muted or very quiet mic: digital silence
            return Segment("silence", "digital silence", silence(seconds))
        level = float(rng.uniform(-65.0, -45.0)) if roll < 0.4 else plan.noise_dbfs
        return Segment("noise", f"pink {level:.0f} dBFS", pink_noise(seconds, level, rng))

    first = True
    while produced < total:
        parts: list[Segment] = []
        if not first:  # start with a question, so the warm-up (one answered question) is early
            for _ in range(plan.speech_per_wake):
                name, clip = others[int(rng.integers(len(others)))]
                gain = float(rng.uniform(*plan.gain_db))
                parts += [pause(), noisy(Segment("speech", name, at_gain(clip, gain)))]
        first = False
        name, clip = questions[int(rng.integers(len(questions)))]
        gain = float(rng.uniform(*plan.gain_db))
        parts += [pause(), *(noisy(s) for s in planted_wake(clip, name, gain_db=gain))]
        # room for the endpoint (1.2 s of trailing silence) before anything else is said
        parts.append(noisy(Segment("noise", "after question", silence(2.5 + float(rng.uniform(0, 1.5))))))
        for part in parts:
            produced += part.seconds
            yield part


# ------------------------------------------------------------------------------------------- measurements


def _status_kb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024.0


def native_threads() -> int:
    return _status_kb("Threads")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class Snapshot:
    audio_s: float
    wall_s: float
    rss_mb: float
    fds: int
    threads: int  # native threads of the process (onnxruntime pools included)
    py_threads: int  # Python threads


@dataclass
class Recorder:
    """Every daemon event with the wall time it was emitted."""

    events: list[Any] = field(default_factory=list)
    replies: int = 0

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        if event.name == "reply":
            self.replies += 1


@dataclass(frozen=True)
class SoakResult:
    audio_s: float
    wall_s: float
    planted: int
    detected: int
    recall: float
    false_wakes: int
    false_wake_where: list[str]
    non_wake_speech_s: float
    noise_s: float
    false_wakes_per_hour: float  # per hour of non-wake speech
    answered: int  # planted wakes followed by a reply before the next wake
    unanswered: list[float]  # audio t of detected wakes with no reply
    replies: int
    errors: list[str]
    rss_start_mb: float
    rss_end_mb: float
    rss_slope_mb_per_hour: float  # least squares over the samples after warm-up, per hour of audio
    rss_samples: list[tuple[float, float]]  # (audio s, MB)
    fds_start: int
    fds_end: int
    threads_start: int
    threads_end: int
    py_threads_start: int
    py_threads_end: int

    @property
    def speed(self) -> float:
        """Seconds of audio per second of wall time."""
        return self.audio_s / max(self.wall_s, 1e-9)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    t = np.array([s[0] for s in samples]) / 3600.0
    y = np.array([s[1] for s in samples])
    if np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, y, 1)[0])


def score(placed: list[Placed], events: list[Any]) -> dict[str, Any]:
    """Match wake events to planted wakes; count false wakes (attributed to the segment they fell in)."""
    wakes = [e for e in events if e.name == "wake"]
    planted = [p for p in placed if p.kind == "wake"]
    matched: set[int] = set()
    detected = 0
    for p in planted:
        lo, hi = p.start, p.end + DETECTION_WINDOW_S
        hit = next((i for i, w in enumerate(wakes) if i not in matched and lo <= w.t <= hi), None)
        if hit is not None:
            matched.add(hit)
            detected += 1
    false = [w for i, w in enumerate(wakes) if i not in matched]

    def where(t: float) -> str:
        for p in placed:
            if p.start <= t < p.end:
                return f"{p.kind}:{p.name}@{t:.1f}s"
        return f"?@{t:.1f}s"

    replies = [e for e in events if e.name == "reply"]
    unanswered = []
    for i in sorted(matched):
        start = wakes[i].t
        end = wakes[i + 1].t if i + 1 < len(wakes) else float("inf")
        if not any(start <= r.t < end for r in replies):
            unanswered.append(start)
    return {
        "planted": len(planted),
        "detected": detected,
        "false": false,
        "false_where": [where(w.t - 0.5) for w in false],  # the spotter reports ~0.5 s after the keyword
        "answered": len(matched) - len(unanswered),
        "unanswered": unanswered,
    }


# ------------------------------------------------------------------------------------------------ running


def export_tiny_llm(cache: Path = DEFAULT_CACHE) -> Path:
    """int8 export of the tiny reference weights, made once (in a child process: no torch in this one)."""
    out = cache / "minimind-tiny-int8"
    if (out / "model.json").is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; from export.cli import main; "
        f"sys.exit(main([{str(TINY_CHECKPOINT)!r}, '--out', {str(out)!r}, '--quant', 'int8', "
        f"'--tokenizer', {str(TOKENIZER_DIR)!r}]))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


def build_daemon_parts(llm_dir: Path, keywords_file: Path, *, max_new_tokens: int = 8,
                       extra: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Settings and models as `assistant run` builds them (English KWS as wake word and ASR, no voice)."""
    from assistant import pipeline

    settings = english_settings(keywords_file, llm_dir, max_new_tokens=max_new_tokens, **(extra or {}))
    keywords = pipeline.load_keyword_list(settings)
    parts = pipeline.Pipeline(
        wake=pipeline.build_wake(settings, keywords),
        asr=pipeline.build_asr(settings),
        chat=pipeline.build_chat(settings),
        speech=None,
    )
    return settings, parts


def _start_all_workers(executor: Any, workers: int) -> None:
    """Make the pool start every worker now: it grows lazily, which would read as thread growth later."""
    barrier = threading.Barrier(workers)
    for future in [executor.submit(barrier.wait, 30) for _ in range(workers)]:
        future.result()


def run_soak(plan: Plan, llm_dir: Path, *, sample_s: float = 30.0, max_new_tokens: int = 8,
             workdir: Path | None = None, progress: bool = False) -> SoakResult:
    from assistant import pipeline
    from assistant.audio.chunk import AudioChunk
    from assistant.daemon import MODEL_WORKERS, make_executor

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        keywords_file = Path(tmp) / "keywords.txt"
        keywords_file.write_text(f"{WAKE_LABEL}\n", encoding="utf-8")
        settings, parts = build_daemon_parts(llm_dir, keywords_file, max_new_tokens=max_new_tokens)

    recorder = Recorder()
    placed: list[Placed] = []
    snapshots: list[Snapshot] = []
    start: dict[str, Snapshot] = {}
    wall0 = time.perf_counter()
    warmup_s = plan.minutes * 60.0 * 0.1  # and one answered question: allocators and pools settle first

    def snap(audio_s: float) -> Snapshot:
        return Snapshot(audio_s, time.perf_counter() - wall0, rss_mb(), open_fds(), native_threads(),
                        threading.active_count())

    def segments() -> Iterator[Segment]:
        for segment, where in placed_of(schedule(plan)):
            placed.append(where)
            yield segment

    async def source() -> AsyncIterator[AudioChunk]:
        next_sample = 0.0
        t = 0.0
        for samples, t in chunks_of(segments()):
            if t >= next_sample:
                if "start" not in start and recorder.replies >= 1 and t >= warmup_s:
                    start["start"] = snap(t)  # warm-up over: every pool and cache has been used once
                if "start" in start:
                    snapshots.append(snap(t))
                if progress:
                    log.info("%.0f s of audio, %d wakes, %d replies, RSS %.1f MB", t,
                             sum(e.name == "wake" for e in recorder.events), recorder.replies, rss_mb())
                next_sample += sample_s
            yield AudioChunk(samples=samples, t=t)
        snapshots.append(snap(t))
        if "start" not in start:
            start["start"] = snapshots[0]

    executor = make_executor()
    _start_all_workers(executor, MODEL_WORKERS)
    daemon = pipeline.build_daemon(settings, parts, emit=recorder, executor=executor)
    try:
        asyncio.run(daemon.run(source()))
    finally:
        executor.shutdown(wait=True)
    end = snapshots[-1]  # at the end of the input, before the executor is shut down
    first = start.get("start", snapshots[0])
    audio_s = placed[-1].end if placed else 0.0
    scored = score(placed, recorder.events)
    speech_s = sum(p.end - p.start for p in placed if p.kind == "speech")
    noise_s = sum(p.end - p.start for p in placed if p.kind in ("noise", "silence"))
    samples = [(s.audio_s, s.rss_mb) for s in snapshots]
    errors = [f"{e.stage}@{e.t:.1f}s: {e.message}" for e in recorder.events if e.name == "error"]
    return SoakResult(
        audio_s=audio_s,
        wall_s=end.wall_s,
        planted=scored["planted"],
        detected=scored["detected"],
        recall=scored["detected"] / max(1, scored["planted"]),
        false_wakes=len(scored["false"]),
        false_wake_where=scored["false_where"],
        non_wake_speech_s=speech_s,
        noise_s=noise_s,
        false_wakes_per_hour=len(scored["false"]) / max(speech_s / 3600.0, 1e-9),
        answered=scored["answered"],
        unanswered=scored["unanswered"],
        replies=recorder.replies,
        errors=errors,
        rss_start_mb=first.rss_mb,
        rss_end_mb=end.rss_mb,
        rss_slope_mb_per_hour=slope_per_hour(samples),
        rss_samples=samples,
        fds_start=first.fds,
        fds_end=end.fds,
        threads_start=first.threads,
        threads_end=end.threads,
        py_threads_start=first.py_threads,
        py_threads_end=end.py_threads,
    )


def report(result: SoakResult) -> str:
    r = result
    return "\n".join([
        f"soak: {r.audio_s / 60:.1f} min of audio in {r.wall_s:.0f} s ({r.speed:.0f}x real time)",
        f"  planted wakes detected: {r.detected}/{r.planted} (recall {r.recall:.1%}; target >= 95%)",
        f"  false wakes: {r.false_wakes} in {r.non_wake_speech_s / 60:.1f} min of non-wake speech "
        f"= {r.false_wakes_per_hour:.2f}/h (target <= 1/h) {r.false_wake_where}",
        f"  answered: {r.answered}/{r.detected} (unanswered at {r.unanswered}); replies {r.replies}; "
        f"errors {len(r.errors)} {r.errors[:5]}",
        f"  RSS {r.rss_start_mb:.1f} -> {r.rss_end_mb:.1f} MB, slope {r.rss_slope_mb_per_hour:+.2f} MB/h of "
        f"audio over {len(r.rss_samples)} samples (target < 5 MB/h)",
        f"  fds {r.fds_start} -> {r.fds_end}; threads {r.threads_start} -> {r.threads_end} "
        f"(Python {r.py_threads_start} -> {r.py_threads_end})",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of audio (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-s", type=float, default=60.0, help="RSS sample every N s of audio")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--llm", type=Path, help="exported MiniMind folder (default: the tiny reference)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.json else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("assistant").setLevel(logging.WARNING)  # the daemon logs every event at info
    llm_dir = args.llm or export_tiny_llm()
    plan = Plan(minutes=args.minutes, seed=args.seed)
    result = run_soak(plan, llm_dir, sample_s=args.sample_s, max_new_tokens=args.max_new_tokens,
                      progress=not args.json)
    if args.json:
        body = {"bench": "soak", "plan": asdict(plan), **asdict(result), "speed": result.speed,
                "command": f".venv/bin/python -m bench.soak --minutes {args.minutes:g} --seed {args.seed}"}
        print(json.dumps(body))
    else:
        print(describe_cpu())
        print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
