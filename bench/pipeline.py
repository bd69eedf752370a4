"""The voice pipeline's figures, each beside a baseline measured in the same run.

- KWS and ASR real-time factors, measured separately on the shared clips (wall time / audio time), beside the
  raw sherpa-onnx loop on the same audio (what the wrappers add).
- End to end on real speech, the daemon in-process (file read as fast as possible, so latencies are compute):
  for each English clip said after the planted wake phrase, end of speech -> endpoint (audio seconds: the
  endpoint rule waits for trailing silence), endpoint -> first token, endpoint -> reply done, and with TTS on
  (espeak-ng, if installed) endpoint -> first audio; baseline: the LLM's own time to first token on the same
  prompt, measured right after.
- Start-up: spawn -> READY on a test NOTIFY_SOCKET, beside a bare interpreter start.
- Idle: two daemons fed pink room noise in real time (--realtime) side by side, gated (the default config) and
  ungated, CPU % of one core and RSS over --idle-s seconds after READY.

    .venv/bin/python -m bench.pipeline [--llm DIR] [--idle-s 60] [--json]

Without --llm the tiny reference MiniMind is exported and used (it understates LLM time; bench/all.py passes
the MiniMind2-Small-shaped int8 export that bench/llm.py makes).

Why ~420 lines: four measurements (RTF, end to end, start-up, idle) that share one exported model and one
report; each is a function of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpu import describe_cpu
from bench.soak import build_daemon_parts, export_tiny_llm
from speechdata.assets import AUDIO, JFK, KWS_EN, KWS_ZH, REPO, UTTERANCE_CLIPS, WAKE_LABEL
from speechdata.audio import SAMPLE_RATE, jfk_question, load_clip, pink_noise, silence, wake_phrase
from speechdata.mix import Mix, Segment

log = logging.getLogger("bench.pipeline")

CLIPS = {
    "en": [JFK, *UTTERANCE_CLIPS, AUDIO / "en" / "porcupine-porcupine.wav"],
    "zh": [
        AUDIO / "zh" / "funasr-asr_example.wav",
        AUDIO / "zh" / "porcupine-haozhu.wav",
        AUDIO / "zh" / "wenet-aishell-BAC009S0724W0121.wav",
    ],
}
KEYWORDS = {"en": "FELLOW AMERICANS\nCOUNTRY\nGOSPEL\n", "zh": "欢迎大家\n豪猪\n广州\n"}
KWS = {"en": KWS_EN, "zh": KWS_ZH}


# ------------------------------------------------------------------------------------------ real-time factors


def _chunks(audio: np.ndarray, block: int = 1600) -> list[Any]:
    from assistant.audio.chunk import AudioChunk

    return [AudioChunk(samples=audio[i : i + block], t=i / SAMPLE_RATE) for i in range(0, len(audio), block)]


def rtf(runs: int = 3) -> dict[str, Any]:
    """Wall seconds per audio second: the wrappers (WakeWord, StreamingASR) vs the raw sherpa-onnx loops."""
    import sherpa_onnx

    from assistant.asr.streaming import StreamingASR
    from assistant.models.files import find_transducer
    from assistant.wake.keywords import format_keywords, load_keywords, load_tokens
    from assistant.wake.spotter import WakeWord

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang in ("en", "zh"):
            files = find_transducer(KWS[lang], f"kws-{lang}")
            kw_path = Path(tmp) / f"kw-{lang}.txt"
            kw_path.write_text(KEYWORDS[lang], encoding="utf-8")
            keywords = load_keywords(kw_path, load_tokens(files.tokens, files.bpe_model))
            sherpa_kw = Path(tmp) / f"sherpa-{lang}.txt"
            sherpa_kw.write_text(format_keywords(keywords), encoding="utf-8")
            audio = np.concatenate([load_clip(p) for p in CLIPS[lang] if p.exists()])
            seconds = len(audio) / SAMPLE_RATE
            chunks = _chunks(audio)
            wake = WakeWord(files, keywords)
            raw = sherpa_onnx.KeywordSpotter(
                tokens=str(files.tokens),
                encoder=str(files.encoder),
                decoder=str(files.decoder),
                joiner=str(files.joiner),
                keywords_file=str(sherpa_kw),
                num_threads=1,
            )

            def run_wake(wake: Any = wake, chunks: list[Any] = chunks) -> None:
                wake.reset()
                for c in chunks:
                    wake.accept(c)

            def run_raw(raw: Any = raw, chunks: list[Any] = chunks) -> None:
                stream = raw.create_stream()
                for c in chunks:
                    stream.accept_waveform(SAMPLE_RATE, c.samples)
                    while raw.is_ready(stream):
                        raw.decode_stream(stream)
                        if raw.get_result(stream):
                            raw.reset_stream(stream)

            times = _interleaved({"kws": run_wake, "kws_raw": run_raw}, runs)
            out[f"kws_{lang}_rtf"] = times["kws"] / seconds
            out[f"kws_{lang}_raw_rtf"] = times["kws_raw"] / seconds
            out[f"kws_{lang}_audio_s"] = seconds
        # ASR: the English KWS model decoding as a streaming transducer (the real ASR models are fetched
        # by users; none here), English clips.
        files = find_transducer(KWS_EN, "kws-en")
        audio = np.concatenate([load_clip(p) for p in CLIPS["en"] if p.exists()])
        seconds = len(audio) / SAMPLE_RATE
        asr = StreamingASR(files)
        raw_asr = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(files.tokens),
            encoder=str(files.encoder),
            decoder=str(files.decoder),
            joiner=str(files.joiner),
            num_threads=1,
            sample_rate=SAMPLE_RATE,
            feature_dim=80,
        )
        blocks = [audio[i : i + 1600] for i in range(0, len(audio), 1600)]

        def run_asr() -> None:
            asr.start()
            for b in blocks:
                asr.accept(b)
            asr.finish()

        def run_raw_asr() -> None:
            stream = raw_asr.create_stream()
            for b in blocks:
                stream.accept_waveform(SAMPLE_RATE, b)
                while raw_asr.is_ready(stream):
                    raw_asr.decode_stream(stream)
            raw_asr.get_result(stream)

        times = _interleaved({"asr": run_asr, "asr_raw": run_raw_asr}, runs)
        out["asr_en_rtf"] = times["asr"] / seconds
        out["asr_en_raw_rtf"] = times["asr_raw"] / seconds
        out["asr_en_audio_s"] = seconds
    return out


def _interleaved(fns: dict[str, Any], runs: int) -> dict[str, float]:
    """Median wall seconds of each function, run round-robin so background load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(v) for name, v in times.items()}


# ------------------------------------------------------------------------------------------------ end to end


def _speech_end(clip: np.ndarray, floor_db: float = -45.0) -> float:
    """Seconds into `clip` where its last 20 ms frame above `floor_db` ends (clips end in silence)."""
    frame = 320
    n = len(clip) // frame
    levels = 10 * np.log10(np.mean(clip[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(levels > floor_db)[0]
    return float((loud[-1] + 1) * frame / SAMPLE_RATE) if len(loud) else 0.0


def end_to_end(llm_dir: Path, *, tts: bool) -> dict[str, Any]:
    """The daemon on wake phrase + each English clip; per-utterance latencies, medians over the clips."""
    from assistant import pipeline
    from assistant.audio.sources import open_source
    from assistant.daemon import make_executor
    from assistant.reply.sinks import Speech
    from assistant.reply.tts import EspeakTts, WavFileOutput
    from assistant.settings import TtsSettings

    questions = [("jfk", jfk_question())] + [(p.stem, load_clip(p)) for p in UTTERANCE_CLIPS if p.exists()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kw = Path(tmp) / "keywords.txt"
        kw.write_text(f"{WAKE_LABEL}\n", encoding="utf-8")
        settings, parts = build_daemon_parts(
            llm_dir, kw, max_new_tokens=32, extra={"llm.threads": 2, "llm.greedy": True}
        )
        first_audio: list[float] = []

        class TimedOutput(WavFileOutput):
            def play(self, samples: np.ndarray, sample_rate: int, stop=None) -> None:
                first_audio.append(time.perf_counter())
                super().play(samples, sample_rate, stop)

        speech = None
        if tts:
            speech = Speech(EspeakTts(TtsSettings(engine="espeak")), TimedOutput(Path(tmp) / "spoken.wav"))
        for name, clip in questions:
            mix = Mix(noise_dbfs=-60.0)
            mix.add(Segment("noise", "lead-in", silence(1.0)))
            mix.add(Segment("wake", WAKE_LABEL, wake_phrase()))
            question = mix.add(Segment("utterance", name, clip))
            mix.add(Segment("noise", "tail", silence(3.0)))
            path = mix.write(Path(tmp) / f"{name}.wav")
            events: list[tuple[float, Any]] = []
            first_audio.clear()
            executor = make_executor()
            parts.wake.reset()
            parts.chat.clear()
            daemon = pipeline.build_daemon(
                settings,
                dataclasses.replace(parts, speech=speech),
                emit=lambda e, events=events: events.append((time.perf_counter(), e)),
                executor=executor,
            )
            try:
                asyncio.run(asyncio.wait_for(daemon.run(open_source(str(path))), 300))
            finally:
                executor.shutdown(wait=True)
            finals = [(w, e) for w, e in events if e.name == "final"]
            firsts = [e for _, e in events if e.name == "first_token"]
            replies = [e for _, e in events if e.name == "reply"]
            if not (finals and firsts and replies):
                log.warning("%s: no complete reply (%s)", name, [e.name for _, e in events])
                continue
            final_wall, final = finals[0]
            speech_end = question.start + _speech_end(clip)
            row = {
                "clip": name,
                "eos_to_endpoint_ms": (final.t - speech_end) * 1000,
                "endpoint_to_first_token_ms": firsts[0].latency_ms,
                "endpoint_to_reply_done_ms": replies[0].latency_ms,
                "text": final.text,
            }
            if first_audio:
                row["endpoint_to_first_audio_ms"] = (first_audio[0] - final_wall) * 1000
            # Baseline: the LLM alone on the same prompt (fresh conversation), time to its first text.
            parts.chat.clear()
            from assistant.llm.sampling import sampling_from

            started = time.perf_counter()
            for _ in parts.chat.stream(final.text, sampling_from(settings.llm)):
                row["llm_alone_first_token_ms"] = (time.perf_counter() - started) * 1000
                break
            rows.append(row)
        if speech is not None:
            speech.close()
    keys = [
        "eos_to_endpoint_ms",
        "endpoint_to_first_token_ms",
        "endpoint_to_reply_done_ms",
        "endpoint_to_first_audio_ms",
        "llm_alone_first_token_ms",
    ]
    medians = {
        k: statistics.median([r[k] for r in rows if k in r]) for k in keys if any(k in r for r in rows)
    }
    return {"rows": rows, "median": medians, "clips": len(rows)}


# ---------------------------------------------------------------------------------------- daemon processes


def _config(workdir: Path, llm_dir: Path, extra: str = "") -> Path:
    (workdir / "keywords.txt").write_text(f"{WAKE_LABEL}\n", encoding="utf-8")
    path = workdir / f"config{abs(hash(extra)) % 1000}.yaml"
    path.write_text(
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n{extra}"
        f"asr:\n  model_dir: {KWS_EN}\nllm:\n  model_dir: {llm_dir}\n  threads: 2\n",
        encoding="utf-8",
    )
    return path


def _spawn(workdir: Path, config: Path, audio: Path, sock_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=str(sock_path))
    return subprocess.Popen(
        [sys.executable, "-m", "assistant", "--config", str(config), "--input", str(audio), *extra],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(sock: socket.socket, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            if "READY=1" in sock.recv(4096).decode():
                return time.perf_counter()
        except TimeoutError:
            continue
    raise TimeoutError("no READY from the daemon")


def startup(llm_dir: Path, runs: int = 3) -> dict[str, Any]:
    """Spawn -> READY (config, keywords, three models loaded, audio open) vs a bare interpreter start."""
    ready, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = _config(work, llm_dir)
        path = work / "silence.wav"
        audio = Mix()
        audio.add(Segment("silence", "s", silence(1.0)))
        audio.write(path)
        for i in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append((time.perf_counter() - started) * 1000)
            sock_path = work / f"notify{i}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(sock_path))
            started = time.perf_counter()
            proc = _spawn(work, config, path, sock_path)
            try:
                ready.append((_wait_ready(sock) - started) * 1000)
            finally:
                proc.wait(timeout=120)
                sock.close()
    return {"ready_ms": statistics.median(ready), "python_start_ms": statistics.median(bare), "runs": runs}


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def idle(llm_dir: Path, seconds: float = 60.0, noise_dbfs: float = -55.0) -> dict[str, Any]:
    """Gated and ungated daemons side by side, fed room noise in real time; CPU % of one core and RSS."""
    settle_s = 3.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        noise = work / "room.wav"
        mix = Mix()
        rng = np.random.default_rng(0)
        mix.add(Segment("noise", "room", pink_noise(seconds + settle_s + 15.0, noise_dbfs, rng)))
        mix.write(noise)
        configs = {
            "gated": _config(work, llm_dir),
            "ungated": _config(work, llm_dir, "  gate:\n    enabled: false\n"),
        }
        procs, socks = {}, {}
        for name, config in configs.items():
            sock_path = work / f"{name}.sock"
            socks[name] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            socks[name].bind(str(sock_path))
            procs[name] = _spawn(work, config, noise, sock_path, "--realtime")
        try:
            for name in procs:
                _wait_ready(socks[name])
            time.sleep(settle_s)  # past start-up work; the noise floor is learned
            start = {name: _cpu_s(p.pid) for name, p in procs.items()}
            t0 = time.perf_counter()
            time.sleep(seconds)
            wall = time.perf_counter() - t0
            cpu = {name: (_cpu_s(p.pid) - start[name]) / wall * 100 for name, p in procs.items()}
            rss = {name: _rss_mb(p.pid) for name, p in procs.items()}
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=60)
            for s in socks.values():
                s.close()
    return {"seconds": seconds, "noise_dbfs": noise_dbfs, "cpu_pct": cpu, "rss_mb": rss}


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", type=Path, help="exported MiniMind folder (default: the tiny reference)")
    parser.add_argument("--idle-s", type=float, default=60.0, help="seconds of real-time idle measurement")
    parser.add_argument(
        "--runs", type=int, default=3, help="interleaved runs for the RTF and start-up medians"
    )
    parser.add_argument("--skip", action="append", default=[], choices=["rtf", "e2e", "startup", "idle"])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    llm_dir = args.llm or export_tiny_llm()
    result: dict[str, Any] = {"bench": "pipeline", "cpu": describe_cpu(), "llm": str(llm_dir)}
    if "rtf" not in args.skip:
        result["rtf"] = rtf(args.runs)
    if "e2e" not in args.skip:
        result["e2e"] = end_to_end(llm_dir, tts=False)
        if shutil.which("espeak-ng"):
            result["e2e_tts"] = end_to_end(llm_dir, tts=True)
    if "startup" not in args.skip:
        result["startup"] = startup(llm_dir, args.runs)
    if "idle" not in args.skip:
        result["idle"] = idle(llm_dir, args.idle_s)
    result["command"] = ".venv/bin/python -m bench.pipeline" + (f" --llm {args.llm}" if args.llm else "")
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
