"""Idle CPU of the wake-word loop: ungated vs energy gate vs silero gate, measured in the same run.

Default (fast): the audio is fed as fast as possible and the figure is process CPU seconds per second of
audio, as % of one core: what the loop would cost fed in real time, minus the sleeping. `--realtime` paces
the chunks like a microphone (sleeping until each chunk's time) and reports CPU time / wall time, the honest
version; it takes as long as the audio per configuration.

Scenes (16 kHz, 100 ms chunks):
- silence: pink noise ("room tone") at --noise-dbfs RMS, its level drifting +-3 dB over tens of seconds,
  for --minutes; optionally the recorded pauses of the shared clips are spliced in (--with-pauses).
- speech: every shared clip back to back (about a minute), looped to --speech-minutes.
Each scene also reports the wake labels each configuration fired, which must be identical.

`--whole-daemon`: the whole process instead of the wake loop alone. The real daemon (`python -m assistant
--input -`, the English KWS model as wake word and ASR, the tiny MiniMind export) reads stdin, fed pink noise
at --noise-dbfs in real time, 100 ms writes, by a feeder process; after --warmup-s the CPU time (utime + stime
from /proc/PID/stat, every thread) of each daemon and each feeder is counted over --seconds. In the same run:
the gated daemon, the ungated one, a bare feeder writing to /dev/null, and the gated daemon of every
--checkout (another copy of the repo, e.g. the old code: `git archive REV | tar -x -C /tmp/old`).
`--block-ms 100 50`: one gated daemon per input block size (`audio.block_ms`, how the daemon cuts its input
into chunks), all fed the same 100 ms writes at the same real-time rate; the ungated daemon and the checkouts
take the first size. Without it every daemon runs with the config's default block size.

    .venv/bin/python -m bench.idle [--minutes 10] [--noise-dbfs -55] [--realtime]
    .venv/bin/python -m bench.idle --whole-daemon [--warmup-s 10] [--seconds 45] [--checkout /tmp/old]
        [--block-ms 100 50] [--no-ungated]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sherpa_onnx

from assistant.audio.chunk import AudioChunk
from assistant.settings import GateSettings
from assistant.wake.gate import GatedWakeWord, make_gate
from bench.cpu import describe_cpu
from speechdata.assets import KEYWORD_CLIPS, KWS, KWS_EN, REPO, SILERO, WAKE_LABEL, clip_keywords_file
from speechdata.audio import SAMPLE_RATE, chunks, load_clip, pink_noise

log = logging.getLogger("bench.idle")


class Spotter:
    """The raw sherpa-onnx keyword loop (accept -> drain is_ready -> result -> reset), WakeWord's shape."""

    def __init__(self, lang: str, keywords_file: Path, threshold: float = 0.25) -> None:
        d = KWS[lang]
        self.kws = sherpa_onnx.KeywordSpotter(
            tokens=str(d / "tokens.txt"),
            encoder=str(next(d.glob("encoder*.onnx"))),
            decoder=str(next(d.glob("decoder*.onnx"))),
            joiner=str(next(d.glob("joiner*.onnx"))),
            keywords_file=str(keywords_file),
            num_threads=1,
            keywords_threshold=threshold,
        )
        self.stream = self.kws.create_stream()
        self.t_end = 0.0

    def accept(self, chunk: AudioChunk) -> tuple[str, float] | None:
        self.t_end = chunk.t + len(chunk.samples) / SAMPLE_RATE
        self.stream.accept_waveform(SAMPLE_RATE, chunk.samples)
        found = None
        while self.kws.is_ready(self.stream):
            self.kws.decode_stream(self.stream)
            label = self.kws.get_result(self.stream)
            if label:
                found = (label, chunk.t + len(chunk.samples) / SAMPLE_RATE)
                self.kws.reset_stream(self.stream)
        return found

    def reset(self) -> None:
        self.stream = self.kws.create_stream()

    def flush(self) -> tuple[str, float] | None:
        # A keyword at the very end is only emitted after ~0.5 s of trailing audio.
        return self.accept(AudioChunk(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), self.t_end))


def run_spotter(wake: object, audio: np.ndarray) -> list[tuple[str, float]]:
    """Feed `audio` chunk by chunk, then flush; return (label, t) of every detection."""
    found = []
    for chunk in chunks(audio):
        hit = wake.accept(chunk)  # type: ignore[attr-defined]
        if hit:
            found.append(hit)
    hit = wake.flush()  # type: ignore[attr-defined]
    if hit:
        found.append(hit)
    return found


def measure(wake: object, audio: np.ndarray, realtime: bool) -> tuple[float, list[str]]:
    """CPU % of one core for the loop over `audio`, and the labels it fired."""
    labels = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for chunk in chunks(audio):
        if realtime:
            delay = wall0 + chunk.t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        hit = wake.accept(chunk)  # type: ignore[attr-defined]
        if hit:
            labels.append(hit[0])
    cpu = time.process_time() - cpu0
    span = (time.perf_counter() - wall0) if realtime else len(audio) / SAMPLE_RATE
    return 100.0 * cpu / span, labels


# ------------------------------------------------------------------------------ the whole daemon (--whole-daemon)

BLOCK_BYTES = 3200  # 100 ms of 16 kHz s16le
READY_TIMEOUT_S = 180.0  # imports + three model loads on a busy 2-core machine


def feed(seconds: float, noise_dbfs: float) -> None:
    """The feeder process: pink room noise as s16le PCM on stdout, one 100 ms write every 100 ms."""
    noise = pink_noise(seconds, noise_dbfs, seed=7, drift_db=3.0)
    pcm = (np.clip(noise, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    out = sys.stdout.fileno()
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), BLOCK_BYTES)):
        delay = start + i * 0.1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        view = memoryview(pcm)[offset : offset + BLOCK_BYTES]
        try:
            while view:
                view = view[os.write(out, view) :]
        except BrokenPipeError:
            return


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of the process's main thread (the event loop's), from /proc/PID/task/PID/stat."""
    with open(f"/proc/{pid}/task/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _config(work: Path, llm_dir: Path, name: str, gate: bool, block_ms: int | None = None) -> Path:
    """A daemon config in `work`; `block_ms` None leaves audio.block_ms at the checkout's default."""
    (work / "keywords.txt").write_text(f"{WAKE_LABEL}\n", encoding="utf-8")
    path = work / f"{name}.yaml"
    block = f"  block_ms: {block_ms}\n" if block_ms is not None else ""
    path.write_text(
        f"paths:\n  state_dir: {work / 'state'}\n"
        f"audio:\n  input: '-'\n{block}"
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n  gate:\n    enabled: {str(gate).lower()}\n"
        f"asr:\n  model_dir: {KWS_EN}\nllm:\n  model_dir: {llm_dir}\n  threads: 1\n",
        encoding="utf-8",
    )
    return path


class DaemonRun:
    """One `python -m assistant --input -` of a checkout, its stdin fed by its own feeder once READY."""

    def __init__(self, name: str, checkout: Path, config: Path, work: Path) -> None:
        self.name = name
        self.sock_path = work / f"{_file_name(name)}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.log = work / f"{_file_name(name)}.log"
        env = dict(os.environ, PYTHONPATH=str(checkout), NOTIFY_SOCKET=str(self.sock_path))
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "assistant", "--config", str(config), "--log-level", "info"],
                cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
            )
        self.feeder: subprocess.Popen[bytes] | None = None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        self.sock.settimeout(1.0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: daemon exited {self.proc.returncode}; see {self.log}")
            try:
                if "READY=1" in self.sock.recv(4096).decode():
                    return
            except TimeoutError:
                continue
        raise TimeoutError(f"{self.name}: no READY within {READY_TIMEOUT_S:g} s")

    def start_feeder(self, seconds: float, noise_dbfs: float) -> None:
        assert self.proc.stdin is not None
        self.feeder = _spawn_feeder(seconds, noise_dbfs, self.proc.stdin)
        self.proc.stdin.close()  # the feeder holds the pipe now: its end is the daemon's end of input

    def wakes(self) -> int:
        return sum("wake '" in line or 'wake "' in line for line in self.log.read_text(errors="replace").splitlines())

    def handoffs(self) -> str:
        """The stdin source's last log line ("N chunks in M handovers, K loop wake-ups", over the daemon's whole
        life: start-up, warm-up and measurement), or "" when it did not log one."""
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if "loop wake-ups" in line]
        return lines[-1].split("stdin: ", 1)[-1].strip() if lines else ""

    def close(self) -> None:
        for proc in (self.feeder, self.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.sock.close()


def _file_name(name: str) -> str:
    """A row name ("gated, 50 ms blocks") as a file name in the work folder."""
    return "".join(c if c.isalnum() or c in "@.-" else "_" for c in name)


def _spawn_feeder(seconds: float, noise_dbfs: float, out: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.idle", "--feeder", "--seconds", str(seconds), "--noise-dbfs", str(noise_dbfs)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=out,
    )


def whole_daemon(warmup_s: float, seconds: float, noise_dbfs: float, checkouts: list[Path],
                 ungated: bool = True, block_ms: list[int] | None = None) -> None:
    """`block_ms`: one gated daemon per input block size (names get ", N ms blocks"); None: one gated daemon
    at the config's default. The ungated daemon and the checkouts take the first size."""
    from bench.soak import export_tiny_llm

    llm_dir = export_tiny_llm()
    load_before = os.getloadavg()
    sizes: list[int | None] = list(dict.fromkeys(block_ms)) if block_ms else [None]

    def named(name: str, size: int | None) -> str:
        return name if size is None else f"{name}, {size} ms blocks"

    with tempfile.TemporaryDirectory(prefix="bench-idle-daemon-") as tmp:
        work = Path(tmp)
        runs = [(named("gated", size), REPO, _config(work, llm_dir, f"gated{size or ''}", True, size))
                for size in sizes]
        if ungated:
            runs.append((named("ungated", sizes[0]), REPO, _config(work, llm_dir, "ungated", False, sizes[0])))
        runs += [(named(f"gated@{c.name}", sizes[0]), c.resolve(), _config(work, llm_dir, "gated", True, sizes[0]))
                 for c in checkouts]
        daemons: list[DaemonRun] = []
        bare = None
        try:
            for name, checkout, config in runs:
                daemons.append(DaemonRun(name, checkout, config, work))
            for daemon in daemons:
                daemon.wait_ready()
            feed_s = warmup_s + seconds + 5.0  # the input outlasts the measurement
            for daemon in daemons:
                daemon.start_feeder(feed_s, noise_dbfs)
            with open(os.devnull, "wb") as null:
                bare = _spawn_feeder(feed_s, noise_dbfs, null)
            time.sleep(warmup_s)  # start-up work done, the gate's noise floor learned
            procs = {d.name: d.proc for d in daemons} | {f"feeder of {d.name}": d.feeder for d in daemons}
            procs["bare feeder (to /dev/null)"] = bare
            start = {name: cpu_s(p.pid) for name, p in procs.items()}
            main_start = {d.name: main_thread_cpu_s(d.proc.pid) for d in daemons}
            t0 = time.perf_counter()
            time.sleep(seconds)
            wall = time.perf_counter() - t0
            pct = {name: (cpu_s(p.pid) - start[name]) / wall * 100 for name, p in procs.items()}
            main_pct = {d.name: (main_thread_cpu_s(d.proc.pid) - main_start[d.name]) / wall * 100 for d in daemons}
            alive = {d.name: d.proc.poll() is None for d in daemons}
        finally:
            for daemon in daemons:
                daemon.close()
            if bare is not None and bare.poll() is None:
                bare.terminate()
                bare.wait()
        wakes = {d.name: d.wakes() for d in daemons}
        handoffs = {d.name: d.handoffs() for d in daemons}
    load_after = os.getloadavg()
    print(f"whole daemon, CPU time (utime+stime, all threads) / wall, % of one core; {seconds:g} s measured after "
          f"{warmup_s:g} s warm-up; stdin fed pink noise {noise_dbfs:g} dBFS +-3 dB drift in real time (100 ms writes)")
    print(describe_cpu())
    print(f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")
    width = max(34, *(len(name) for name in pct))
    print(f"{'process':{width}s} {'CPU %':>7s}  notes")
    for name, value in pct.items():
        note = ""
        if name in alive:
            note = (("" if alive[name] else "EXITED early; ") + f"event loop's thread {main_pct[name]:.3f} %, "
                    f"{wakes[name]} wakes" + (f"; whole life: {handoffs[name]}" if handoffs[name] else ""))
        print(f"{name:{width}s} {value:7.3f}  {note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of room noise (silence scene)")
    parser.add_argument("--noise-dbfs", type=float, default=-55.0, help="room noise RMS level, dBFS")
    parser.add_argument("--realtime", action="store_true", help="pace chunks like a microphone")
    parser.add_argument("--whole-daemon", action="store_true", help="the whole daemon process, fed in real time")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="--whole-daemon: seconds before measuring")
    parser.add_argument("--seconds", type=float, default=45.0, help="--whole-daemon: seconds measured")
    parser.add_argument("--checkout", type=Path, action="append", default=[],
                        help="--whole-daemon: also the gated daemon of this copy of the repo (repeatable)")
    parser.add_argument("--no-ungated", action="store_true", help="--whole-daemon: skip the ungated daemon")
    parser.add_argument("--block-ms", type=int, nargs="+", default=None, metavar="MS",
                        help="--whole-daemon: one gated daemon per input block size (audio.block_ms), same run")
    parser.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)  # the feeder process itself
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.feeder:
        feed(args.seconds, args.noise_dbfs)
        return
    if args.whole_daemon:
        whole_daemon(args.warmup_s, args.seconds, args.noise_dbfs, args.checkout, ungated=not args.no_ungated,
                     block_ms=args.block_ms)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    spotter = Spotter("en", clip_keywords_file("en", work))
    silence = pink_noise(args.minutes * 60, args.noise_dbfs, seed=7, drift_db=3.0)
    clips = [load_clip(clip) for lang, clip, _ in KEYWORD_CLIPS if lang == "en"]
    gap = pink_noise(0.3, args.noise_dbfs, seed=8)
    speech = np.concatenate([part for clip in clips for part in (clip, gap)])
    configs = {
        "ungated": lambda: spotter,
        "energy gate": lambda: GatedWakeWord(spotter, make_gate(GateSettings())),
        "silero gate": lambda: GatedWakeWord(
            spotter, make_gate(GateSettings(kind="silero", silero_model=str(SILERO)))
        ),
    }
    mode = "CPU/wall, paced in real time" if args.realtime else "CPU s per audio s, fed as fast as possible"
    print(describe_cpu())
    print(f"idle CPU, % of one core ({mode}); en KWS, 1 thread, 100 ms chunks")
    print(f"silence: {args.minutes:g} min pink noise {args.noise_dbfs:g} dBFS +-3 dB drift; "
          f"speech: {len(speech) / SAMPLE_RATE:.0f} s of en clips back to back")
    print(f"{'config':12s} {'silence %':>10s} {'speech %':>9s} {'openings':>9s}  speech labels")
    for name, make in configs.items():
        spotter.reset()
        wake = make()
        quiet, fired_quiet = measure(wake, silence, args.realtime)
        openings = getattr(wake, "openings", 0)
        spotter.reset()
        wake = make()
        busy, fired = measure(wake, speech, args.realtime)
        print(f"{name:12s} {quiet:10.3f} {busy:9.2f} {openings:9d}  {' '.join(fired)}"
              + (f"  (false alarms in silence: {fired_quiet})" if fired_quiet else ""))


if __name__ == "__main__":
    main()
