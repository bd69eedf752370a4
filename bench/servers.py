"""Network load beside the voice loop: 8 API clients against 127.0.0.1 while the daemon hears JFK in real time.

Two daemons run one after the other on the same generated audio (JFK, whose "fellow Americans" is the wake word,
then silence, repeated for --seconds, read with --realtime), each with `--http 127.0.0.1:0`:

- baseline: no network load;
- loaded: --clients concurrent clients (aiohttp), each cycling chat, streaming chat and a transcription of the
  JFK clip, for as long as the audio plays. A refused request (429/503) is counted, then retried after its
  Retry-After (1 s), as the openai client does.

Reported: requests done, refused (by status) and failed (anything else: must be 0), p50/p95 latency of the done
ones; the voice path's time to first token (the daemon's own first_token events: endpoint -> first reply text)
and wake words found, without and with the load; the daemon's RSS when its servers start listening and when
the audio ends. Targets (issue 12): voice TTFT <= 2x idle, no wake missed that idle finds, RSS growth < 20 MB.

    .venv/bin/python -m bench.servers [--seconds 120] [--clients 8] [--llm DIR] [--json]

Without --llm the tiny reference MiniMind is exported and used (bench/soak.py): the network chat then costs
little CPU, and the figure is mostly about the audio path and the scheduling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.soak import export_tiny_llm
from speechdata.assets import JFK, KWS_EN
from speechdata.audio import SAMPLE_RATE, load_clip, silence

REPO = Path(__file__).resolve().parents[1]

CYCLE_GAP_S = 4.0  # silence after each JFK clip: the endpoint, the reply and back to idle fit in it
PER_CLIENT = 8
PROMPTS = ("What is the capital of France?", "Tell me a short story about a cat.", "你好，请介绍一下北京。")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_audio(seconds: float, out: Path) -> int:
    """JFK + gap, repeated to fill `seconds`; returns the number of planted wake phrases."""
    jfk = load_clip(JFK)
    cycle = np.concatenate([jfk, silence(CYCLE_GAP_S)])
    count = max(1, int(seconds * SAMPLE_RATE // len(cycle)))
    sf.write(str(out), np.tile(cycle, count), SAMPLE_RATE, subtype="PCM_16")
    return count


@dataclass
class Phase:
    name: str
    planted: int
    wakes: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    rss_start_mb: float = 0.0  # when the servers listen (models loaded, nothing run yet)
    rss_warm_mb: float = 0.0  # after the first voice reply (the voice path's allocations made)
    rss_end_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    done: Counter[str] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    exit_code: int | None = None


class Daemon:
    def __init__(self, workdir: Path, audio: Path, llm: Path) -> None:
        keywords = workdir / "keywords.txt"
        keywords.write_text("FELLOW AMERICANS\n", encoding="utf-8")
        config = workdir / "config.yaml"
        config.write_text(f"wake:\n  keywords_file: {keywords}\n  model_dir: {KWS_EN}\nasr:\n  model_dir: {KWS_EN}\n"
                          f"llm:\n  model_dir: {llm}\n  max_new_tokens: 16\n  threads: 1\n"
                          # All clients come from 127.0.0.1, one "client" for the per-address limit: let the
                          # bounded queue (1 worker + 4 waiting, then 503) be what refuses them here.
                          f"servers:\n  limits:\n    per_client: {PER_CLIENT}\n", encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "run", "--config", str(config), "--input", str(audio), "--realtime",
             "--json", "--http", "127.0.0.1:0"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self.port: int | None = None
        self.listening = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
                self.listening.set()


async def client_loop(index: int, port: int, until: float, phase: Phase, jfk_bytes: bytes) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    kinds = ("chat", "stream", "transcribe")
    n = index
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        while time.monotonic() < until:
            kind = kinds[n % 3]
            prompt = PROMPTS[n % len(PROMPTS)]
            n += 1
            started = time.perf_counter()
            try:
                if kind == "transcribe":
                    form = aiohttp.FormData()
                    form.add_field("file", jfk_bytes, filename="jfk.flac", content_type="audio/flac")
                    form.add_field("model", "whisper-1")
                    request = session.post(f"{base}/v1/audio/transcriptions", data=form)
                else:
                    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 32,
                            "stream": kind == "stream"}
                    request = session.post(f"{base}/v1/chat/completions", json=body)
                async with request as response:
                    data = await response.read()
                    if response.status == 200:
                        if kind == "stream" and not data.rstrip().endswith(b"data: [DONE]"):
                            phase.failed[f"{kind}: stream without [DONE]"] += 1
                            continue
                        phase.done[kind] += 1
                        phase.latencies_ms.append((time.perf_counter() - started) * 1000)
                    elif response.status in (429, 503):
                        phase.refused[response.status] += 1
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))  # as openai's client
                    else:
                        phase.failed[f"{kind}: HTTP {response.status} {data[:120]!r}"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                if time.monotonic() < until:
                    phase.failed[f"{kind}: {type(exc).__name__}: {exc}"] += 1


def run_phase(name: str, audio: Path, planted: int, llm: Path, seconds: float, clients: int) -> Phase:
    phase = Phase(name=name, planted=planted)
    with tempfile.TemporaryDirectory(prefix=f"bench-servers-{name}-") as tmp:
        daemon = Daemon(Path(tmp), audio, llm)
        if not daemon.listening.wait(180):
            daemon.proc.kill()
            raise SystemExit(f"{name}: the daemon did not start listening:\n{''.join(daemon.stderr)}")
        assert daemon.port is not None
        phase.rss_start_mb = rss_mb(daemon.proc.pid)
        until = time.monotonic() + seconds

        def sample_warm() -> None:
            while daemon.proc.poll() is None and not any(e["event"] == "reply" for e in list(daemon.events)):
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                phase.rss_warm_mb = rss_mb(daemon.proc.pid)

        warm = threading.Thread(target=sample_warm, daemon=True)
        warm.start()
        if clients:

            async def load() -> None:
                jfk_bytes = JFK.read_bytes()
                await asyncio.gather(*(client_loop(i, daemon.port, until, phase, jfk_bytes) for i in range(clients)))

            asyncio.run(load())
        # The audio ends by itself: sample RSS until the process exits; the last sample is the end figure.
        last_rss = phase.rss_start_mb
        while daemon.proc.poll() is None:
            try:
                last_rss = rss_mb(daemon.proc.pid) or last_rss  # 0 once it is a zombie: keep the last figure
            except OSError:
                break
            time.sleep(0.5)
        phase.rss_end_mb = last_rss
        phase.exit_code = daemon.proc.wait(60)
        warm.join(5)
        phase.wakes = sum(e["event"] == "wake" for e in daemon.events)
        phase.ttft_ms = [e["latency_ms"] for e in daemon.events if e["event"] == "first_token"]
    return phase


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def summary(p: Phase) -> dict[str, Any]:
    return {
        "phase": p.name, "exit_code": p.exit_code, "wakes": f"{p.wakes}/{p.planted}",
        "voice_ttft_ms_median": round(statistics.median(p.ttft_ms), 1) if p.ttft_ms else None,
        "voice_ttft_ms_max": round(max(p.ttft_ms), 1) if p.ttft_ms else None,
        "requests_done": sum(p.done.values()), "done_by_kind": dict(p.done), "refused": dict(p.refused),
        "failed": sum(p.failed.values()), "failures": dict(p.failed),
        "latency_ms_p50": round(pct(p.latencies_ms, 50), 1) if p.latencies_ms else None,
        "latency_ms_p95": round(pct(p.latencies_ms, 95), 1) if p.latencies_ms else None,
        "rss_start_mb": round(p.rss_start_mb, 1), "rss_warm_mb": round(p.rss_warm_mb, 1),
        "rss_end_mb": round(p.rss_end_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="audio (and load) per phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--llm", type=Path, help="exported MiniMind folder (default: the tiny reference export)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    llm = args.llm or export_tiny_llm()
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as tmp:
        audio = Path(tmp) / "jfk-cycles.wav"
        planted = make_audio(args.seconds, audio)
        load_before = os.getloadavg()
        idle = run_phase("idle", audio, planted, llm, args.seconds, 0)
        loaded = run_phase("loaded", audio, planted, llm, args.seconds, args.clients)
        load_after = os.getloadavg()
    rows = [summary(idle), summary(loaded)]
    ratio = None
    if idle.ttft_ms and loaded.ttft_ms:
        ratio = statistics.median(loaded.ttft_ms) / statistics.median(idle.ttft_ms)
    verdict = {
        "ttft_ratio_loaded_over_idle": round(ratio, 2) if ratio else None,
        "ttft_within_2x": ratio is not None and ratio <= 2.0,
        "no_wake_missed": loaded.wakes >= idle.wakes,
        # Growth from the warm voice path to the end, under load; the idle phase's own growth beside it.
        "rss_growth_mb": round(loaded.rss_end_mb - loaded.rss_warm_mb, 1),
        "rss_growth_idle_mb": round(idle.rss_end_mb - idle.rss_warm_mb, 1),
        "rss_growth_under_20mb": loaded.rss_end_mb - loaded.rss_warm_mb < 20,
        "failed_is_zero": sum(loaded.failed.values()) == 0,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "clients": args.clients, "seconds": args.seconds, "llm": str(llm),
    }
    if args.json:
        print(json.dumps({"phases": rows, "verdict": verdict}, ensure_ascii=False, indent=1))
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        print(json.dumps(verdict, ensure_ascii=False))
    return 0 if verdict["failed_is_zero"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
