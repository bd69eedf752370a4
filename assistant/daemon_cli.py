"""`assistant [run]`: load config and keywords, load the models, open the audio, run the daemon until the end.

Order matters for exit codes: the config and the keywords file are checked first (CONFIG), then the audio is
opened (AUDIO), then the models are loaded (MODEL); systemd does not restart the first kind. SIGTERM/SIGINT
cancel the main task, so the reply in flight is cancelled and the sinks are closed before exit 0. SIGHUP
reloads config and keywords in the background and swaps them in between two chunks; a bad reload is logged
and the old ones stay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from assistant.daemon import Daemon, Reloaded, make_executor
from assistant.exitcodes import OK, ConfigError
from assistant.notify import Notifier, journal_logging_handler
from assistant.settings import Settings, load_settings
from assistant.sinks import EventWriter, Speech

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.yaml")  # read from the working directory when --config is not given
# Seconds the spotter's estimate of a keyword's end can be early (JFK: estimated 2.20 s, the VAD heard the
# keyword's speech go on to 2.39 s).
KEYWORD_END_ERROR_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keywords",
        type=Path,
        metavar="FILE",
        help="wake words, one per line (plain phrases or sherpa tokens) [wake.keywords_file]",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"settings file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)",
    )
    parser.add_argument(
        "--input",
        metavar="mic|FILE|-",
        help="microphone, a WAV/FLAC file, or 16 kHz s16le PCM on stdin [audio.input]",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        default=None,
        help="pace a file or stdin like a live microphone [audio.realtime]",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=None,
        help="write events as JSON lines to stdout [logging.json]",
    )
    parser.add_argument("--model-dir", type=Path, metavar="DIR", help="models folder [paths.models_dir]")
    parser.add_argument("--kws-model", type=Path, metavar="DIR", help="wake word model [wake.model_dir]")
    parser.add_argument("--asr-model", type=Path, metavar="DIR", help="streaming ASR model [asr.model_dir]")
    parser.add_argument("--llm-model", type=Path, metavar="DIR", help="exported MiniMind [llm.model_dir]")
    parser.add_argument("--device", metavar="NAME|INDEX", help="microphone by name or index [audio.device]")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="[logging.level]")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as dotted settings keys (None: not given, the config file decides)."""
    device: Any = args.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    return {
        "wake.keywords_file": args.keywords,
        "audio.input": args.input,
        "audio.realtime": args.realtime,
        "audio.device": device,
        "logging.json": args.json,
        "logging.level": args.log_level,
        "paths.models_dir": args.model_dir,
        "wake.model_dir": args.kws_model,
        "asr.model_dir": args.asr_model,
        "llm.model_dir": args.llm_model,
    }


def config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        return args.config
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def setup_logging(level: str) -> None:
    """Human logs on stderr (stdout is for events); under systemd, journal lines with priorities."""
    handler = journal_logging_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# ---------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Pipeline:
    """The loaded models (the names of the daemon's constructor arguments)."""

    wake: Any
    asr: Any
    chat: Any
    speech: Speech | None


def load_keyword_list(settings: Settings) -> list[Any]:
    """Parse the keywords file against the wake model's tokens (reads tokens.txt only, no model load)."""
    from assistant.keywords import load_keywords, load_tokens
    from assistant.model_files import find_transducer

    if settings.wake.keywords_file is None:
        raise ConfigError("no keywords file: pass --keywords FILE or set wake.keywords_file in the config")
    files = find_transducer(settings.wake_model_dir(), settings.wake.model)
    return load_keywords(settings.wake.keywords_file, load_tokens(files.tokens, files.bpe_model))


def build_wake(settings: Settings, keywords: list[Any]) -> Any:
    from assistant.gate import gated
    from assistant.model_files import find_transducer
    from assistant.wake import WakeWord

    files = find_transducer(settings.wake_model_dir(), settings.wake.model)
    wake = WakeWord(
        files,
        keywords,
        keywords_score=settings.wake.keywords_score,
        keywords_threshold=settings.wake.keywords_threshold,
        num_threads=settings.wake.num_threads,
    )
    return gated(wake, settings.gate_settings())


def build_asr(settings: Settings) -> Any:
    """The recognizer for asr.engine (new engines are added here, behind the same start/accept/finish)."""
    asr = settings.asr
    if asr.engine == "vad-offline":
        from assistant.asr_offline import VadOfflineASR, find_offline_model

        offline = asr.offline
        files = find_offline_model(settings.offline_model_dir(), kind=offline.kind, name=offline.model)
        return VadOfflineASR(
            files,
            settings.vad_settings(),
            language=offline.language,
            use_itn=offline.use_itn,
            num_threads=offline.num_threads,
            # The daemon starts listening pre_roll_s before the keyword's estimated end, which can be a few
            # hundred ms early: speech that ran from there and stopped within this is the keyword itself.
            keyword_tail_s=asr.pre_roll_s + KEYWORD_END_ERROR_S,
            first_partial_s=offline.first_partial_s,
        )
    from assistant.asr import StreamingASR
    from assistant.model_files import find_transducer

    files = find_transducer(settings.asr_model_dir(), settings.asr_model_name())
    return StreamingASR(
        files,
        rule1_min_trailing_silence=asr.endpoint.rule1_min_trailing_silence,
        rule2_min_trailing_silence=asr.endpoint.rule2_min_trailing_silence,
        rule3_min_utterance_length=asr.endpoint.rule3_min_utterance_length,
        decoding_method=asr.decoding_method,
        num_threads=asr.num_threads,
    )


def build_chat(settings: Settings) -> Any:
    from assistant.chat import Conversation
    from assistant.llm import MiniMindOnnx
    from assistant.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer

    llm = settings.llm
    model_dir = settings.llm_model_dir()
    model = MiniMindOnnx(model_dir, threads=llm.threads, max_context_tokens=llm.max_context_tokens)
    tokenizer = Tokenizer.from_dir(model_dir)
    return Conversation(
        model,
        tokenizer,
        system_prompt=llm.system_prompt or DEFAULT_SYSTEM_PROMPT,
        max_context_tokens=llm.max_context_tokens,
    )


def build_speech(settings: Settings) -> Speech | None:
    from assistant.tts import make_output, make_synthesizer

    synthesizer = make_synthesizer(settings.tts)
    if synthesizer is None:
        return None
    return Speech(synthesizer, make_output(settings.tts, realtime=settings.audio.realtime))


def build_pipeline(settings: Settings, keywords: list[Any]) -> Pipeline:
    started = time.perf_counter()
    pipeline = Pipeline(
        wake=build_wake(settings, keywords),
        asr=build_asr(settings),
        chat=build_chat(settings),
        speech=build_speech(settings),
    )
    if settings.asr.engine == "vad-offline":
        asr = f"{settings.offline_model_dir()} + VAD {settings.vad_settings().model}"
    else:
        asr = str(settings.asr_model_dir())
    log.info(
        "models loaded in %.0f ms (wake %s, asr %s %s, llm %s, tts %s)",
        (time.perf_counter() - started) * 1000,
        settings.wake_model_dir(),
        settings.asr.engine,
        asr,
        settings.llm_model_dir(),
        settings.tts.engine,
    )
    return pipeline


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not dataclasses.is_dataclass(value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        flat.update(_flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return flat


# Settings a SIGHUP applies: the wake word and ASR are rebuilt, the reply reads these per utterance.
# Everything else (audio stream, LLM session, TTS voice, logging, watchdog) is set up once at start.
RELOADABLE = (
    "wake.",
    "asr.",
    "paths.models_dir",
    "llm.temperature",
    "llm.top_p",
    "llm.top_k",
    "llm.repetition_penalty",
    "llm.max_new_tokens",
    "llm.seed",
    "llm.greedy",
    "llm.follow_up_window_s",
    "tts.mute_tail_s",
)


def describe_reload(old: Settings, new: Settings, keywords: list[Any]) -> str:
    """One line for the log: the keyword labels now active and every setting whose value changed.

    Changes a reload cannot apply are named too (and logged as a warning), so an edit never looks applied
    when it needs `systemctl restart`.
    """
    labels = list(dict.fromkeys(str(getattr(k, "label", k)) for k in keywords))
    before, after = _flatten(old), _flatten(new)
    changed = [key for key, value in after.items() if before.get(key) != value]
    live = [f"{key} {before.get(key)} -> {after[key]}" for key in changed if key.startswith(RELOADABLE)]
    later = [key for key in changed if not key.startswith(RELOADABLE)]
    if later:
        log.warning("reload: %s take effect only after a restart", ", ".join(later))
    text = f"keywords {new.wake.keywords_file} ({', '.join(labels)}); "
    text += f"changed: {', '.join(live)}" if live else "no setting changed"
    if later:
        text += f"; needs a restart: {', '.join(later)}"
    return text


class StdinPump:
    """stdin read by a daemon thread, handed out through `read(n)` (the stream PcmStreamSource reads).

    PcmStreamSource reads in an executor thread, and asyncio.run waits for those threads on the way out: a
    read blocked on a pipe whose writer (`arecord | assistant --input -`) is open but quiet never returns, so
    SIGTERM hung until systemd's TimeoutStopSec killed us. close() ends a pending read() with EOF at once; the
    thread stuck in the real read is a daemon thread and does not hold the process.
    """

    def __init__(self, stream: BinaryIO, max_queued: int = 64) -> None:
        self._stream = stream
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max_queued)  # back-pressure like the pipe's
        self._buffer = b""
        self._closed = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._pump, name="stdin-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        # The raw fd, not the buffered object: at interpreter exit Python takes the BufferedReader's lock to
        # close it, and a daemon thread parked inside read1() holds that lock ("Fatal Python error").
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        while not self._closed.is_set():
            try:
                data = os.read(fd, 65536) if fd is not None else self._stream.read(65536)
            except (OSError, ValueError) as exc:
                # A dead recorder (EIO) is not a clean end of input: read() re-raises it in the reader.
                self._error = exc
                data = b""
            while not self._closed.is_set():
                try:
                    self._queue.put(data, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not data:
                return

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (fewer when that is what has arrived); b"" at end of input or after close()."""
        while not self._buffer:
            if self._closed.is_set():
                return b""
            try:
                self._buffer = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._buffer:
                self._closed.set()
                if self._error is not None:
                    raise OSError(f"{self._error}") from self._error
                return b""
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        self._closed.set()


# ------------------------------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    # SIGHUP's default action kills the process: until the event loop takes it over, a reload request
    # (an early `systemctl reload`) is remembered and done once the daemon runs.
    early_hup = threading.Event()
    try:
        previous = signal.signal(signal.SIGHUP, lambda signum, frame: early_hup.set())
    except ValueError:  # not the main thread (in-process callers): nothing to guard
        return _run(args, early_hup)
    try:
        return _run(args, early_hup)
    finally:
        signal.signal(signal.SIGHUP, previous)


def _run(args: argparse.Namespace, early_hup: threading.Event) -> int:
    path = config_path(args)
    overrides = overrides_from(args)
    settings = load_settings(path, overrides)
    setup_logging(settings.logging.level)
    keywords = load_keyword_list(settings)
    from assistant.audio import AudioRing, open_source

    # Opened before the models load (a few seconds): a missing file or microphone fails at once. A
    # microphone only starts streaming when iterated, so nothing queues up meanwhile.
    stdin = StdinPump(sys.stdin.buffer) if str(settings.audio.input) == "-" else None
    source = open_source(
        str(settings.audio.input),
        sample_rate=settings.audio.sample_rate,
        block_ms=settings.audio.block_ms,
        realtime=settings.audio.realtime,
        device=settings.audio.device,
        stdin=stdin,  # type: ignore[arg-type] - read(n) is all PcmStreamSource uses
    )
    pipeline = None
    try:
        pipeline = build_pipeline(settings, keywords)
        return asyncio.run(
            _main(
                settings,
                pipeline,
                source,
                AudioRing(settings.audio.ring_s),
                path,
                overrides,
                stdin=stdin,
                early_hup=early_hup,
            )
        )
    finally:
        if stdin is not None:
            stdin.close()
        with contextlib.suppress(Exception):
            source.close()
        if pipeline is not None and pipeline.speech is not None:
            pipeline.speech.close()


async def _main(
    settings: Settings,
    pipeline: Pipeline,
    source: Any,
    ring: Any,
    path: Path | None,
    overrides: dict[str, Any],
    *,
    stdin: StdinPump | None = None,
    early_hup: threading.Event | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    executor = make_executor()
    notifier = Notifier()
    live = settings.audio.input in ("mic", "-") or settings.audio.realtime
    daemon = Daemon(
        settings,
        wake=pipeline.wake,
        asr=pipeline.asr,
        chat=pipeline.chat,
        ring=ring,
        speech=pipeline.speech,
        emit=EventWriter(json_lines=settings.logging.json),
        executor=executor,
        notifier=notifier,
        live=live,
    )
    main = asyncio.current_task()
    assert main is not None
    stopping = False

    def stop(signum: int) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping", signal.Signals(signum).name)
            stopping = True
            notifier.stopping()
        main.cancel()

    def reload() -> None:
        def load() -> Reloaded:
            running = daemon.settings
            fresh = load_settings(path, overrides)
            keywords = load_keyword_list(fresh)
            summary = describe_reload(running, fresh, keywords)
            # The audio stream stays open as it is: its settings (and the clock derived from them) too.
            fresh = dataclasses.replace(fresh, audio=running.audio)
            return Reloaded(
                settings=fresh, wake=build_wake(fresh, keywords), asr=build_asr(fresh), summary=summary
            )

        async def apply() -> None:
            notifier.reloading()
            try:
                reloaded = await loop.run_in_executor(executor, load)
            except Exception as exc:  # noqa: BLE001 - a bad reload keeps the running config
                log.error("reload failed, keeping the old config and keywords: %s", exc)
            else:
                daemon.request_reload(reloaded)
            finally:
                notifier.ready(status=daemon.status_line())

        log.info("SIGHUP: reloading %s and the keywords file", path or "settings")
        reloads.add(loop.create_task(apply()))

    reloads: set[asyncio.Task[None]] = set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, reload)
    if early_hup is not None and early_hup.is_set():
        loop.call_soon(reload)  # runs once daemon.run() has sent READY: RELOADING must come after it
    try:
        await daemon.run(source)
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        for task in reloads:
            task.cancel()
        if stdin is not None:
            stdin.close()  # frees the executor thread waiting in read(): asyncio.run joins it next
        with contextlib.suppress(Exception):
            source.close()
        executor.shutdown(wait=True, cancel_futures=True)
        notifier.close()
    log.info("done: %d replies, %d errors", daemon.replies, daemon.errors)
    return OK
