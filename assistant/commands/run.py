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
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from assistant.audio.sources import AudioSource, open_source
from assistant.commands.serve import add_server_arguments, server_overrides
from assistant.daemon import Daemon, make_executor
from assistant.errors import OK
from assistant.pipeline import (
    Pipeline,
    build_daemon,
    build_intents,
    build_pipeline,
    build_reload,
    build_shared,
    load_keyword_list,
)
from assistant.reply.sinks import EventWriter
from assistant.servers.runner import any_enabled, check_servers
from assistant.service.notify import Notifier, setup_logging
from assistant.settings import DEFAULT_CONFIG, Settings, find_config, load_settings

log = logging.getLogger(__name__)


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
    add_server_arguments(parser)


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
        **server_overrides(args),
    }


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
    path = find_config(args.config)
    overrides = overrides_from(args)
    settings = load_settings(path, overrides)
    setup_logging(settings.logging.level)
    keywords = load_keyword_list(settings)
    intents = build_intents(settings)  # a bad sentence/response file is a config error (3) before the audio
    if any_enabled(settings):
        check_servers(settings)  # an unprotected LAN address fails before the audio opens or models load
    # Opened before the models load (a few seconds): a missing file or microphone fails at once. A
    # microphone only starts streaming when iterated, so nothing queues up meanwhile.
    source = open_source(
        str(settings.audio.input),
        sample_rate=settings.audio.sample_rate,
        block_ms=settings.audio.block_ms,
        realtime=settings.audio.realtime,
        device=settings.audio.device,
    )
    pipeline = None
    try:
        pipeline = build_pipeline(settings, keywords, intents)
        reloader = Reloader(path, overrides)
        shared = build_shared(settings, keywords, pipeline) if any_enabled(settings) else None
        return asyncio.run(_main(settings, pipeline, source, reloader, early_hup=early_hup, shared=shared))
    finally:
        with contextlib.suppress(Exception):
            source.close()
        if pipeline is not None and pipeline.speech is not None:
            pipeline.speech.close()


class Reloader:
    """SIGHUP handling: at most one reload runs, at most one more waits; a burst of signals is one reload.

    A reload re-reads config.yaml and the keywords file and builds a new wake word and recognizer on its own
    thread, never in the model pool, so the spotter and recognizer in use never wait behind it. The daemon swaps
    the result in between two chunks while idle.
    """

    def __init__(self, path: Path | None, overrides: dict[str, Any]) -> None:
        self.path = path
        self.overrides = overrides
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assistant-reload")
        self.requested = 0  # SIGHUPs seen
        self.done = 0  # reloads run to the end (applied or refused)

    def request(self, daemon: Daemon, notifier: Notifier) -> None:
        self.requested += 1
        if self._task is not None and not self._task.done():
            if not self._again:
                log.info("SIGHUP: a reload is running; one more will follow it")
            self._again = True
            return
        log.info("SIGHUP: reloading %s and the keywords file", self.path or "settings")
        self._task = asyncio.get_running_loop().create_task(self._run(daemon, notifier), name="reload")

    async def _run(self, daemon: Daemon, notifier: Notifier) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._again = False
            notifier.reloading()
            try:
                fresh = load_settings(self.path, self.overrides)
                reloaded = await loop.run_in_executor(self._pool, build_reload, daemon.settings, fresh)
            except Exception as exc:  # noqa: BLE001 - a bad reload keeps the running config
                log.error("reload failed, keeping the old config and keywords: %s", exc)
            else:
                daemon.request_reload(reloaded)
            finally:
                self.done += 1
                notifier.ready(status=daemon.status_line())
            if not self._again:
                return

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _main(
    settings: Settings,
    pipeline: Pipeline,
    source: AudioSource,
    reloader: Reloader,
    *,
    early_hup: threading.Event | None = None,
    shared: Any = None,
) -> int:
    loop = asyncio.get_running_loop()
    executor = make_executor()
    notifier = Notifier()
    live = settings.audio.input in ("mic", "-") or settings.audio.realtime
    emit: Any = EventWriter(json_lines=settings.logging.json)
    servers = None
    hub = None
    if shared is not None:
        # The servers see the daemon's events (status page, voice gate) through its emit callable only.
        from assistant.servers.hub import EventHub, fan_out
        from assistant.servers.work import VoiceGate

        hub = EventHub(VoiceGate(settings.servers.limits.voice_hold_s))
        emit = fan_out(emit, hub.publish)
    daemon = build_daemon(
        settings, pipeline, emit=emit, executor=executor, notifier=notifier,
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

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, reloader.request, daemon, notifier)
    if early_hup is not None and early_hup.is_set():
        # Runs once daemon.run() has sent READY: RELOADING must come after it.
        loop.call_soon(reloader.request, daemon, notifier)
    try:
        if shared is not None:
            # Started once the signal handlers are in place: a SIGTERM right after "listening on" stops cleanly.
            from assistant.servers.runner import start_servers

            servers = await start_servers(settings, shared, hub)
        await daemon.run(source)
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        reloader.close()
        if servers is not None:
            await servers.close()
        with contextlib.suppress(Exception):
            source.close()  # a stdin source ends its pending read at once: asyncio.run joins that thread next
        executor.shutdown(wait=True, cancel_futures=True)
        notifier.close()
    log.info("done: %d replies, %d errors", daemon.replies, daemon.errors)
    return OK
