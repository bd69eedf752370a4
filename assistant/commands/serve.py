"""`assistant serve`: the network servers (OpenAI-compatible HTTP API + status page, Wyoming) with no microphone.

Also home of the `--http HOST:PORT` / `--wyoming HOST:PORT` flags that `run` shares. SIGTERM/SIGINT stop the
servers (streams in flight are cancelled) and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from assistant.errors import OK, ConfigError
from assistant.pipeline import build_shared, load_keyword_list
from assistant.service.notify import Notifier, setup_logging
from assistant.settings import DEFAULT_CONFIG, Settings, find_config, load_settings

log = logging.getLogger(__name__)


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (127.0.0.1); argparse reports a bad one as a usage error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8998), got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", type=host_port, metavar="HOST:PORT",
                        help="serve the OpenAI-compatible API and status page here [servers.http]")
    parser.add_argument("--wyoming", type=host_port, metavar="HOST:PORT",
                        help="serve Wyoming (wake, asr, tts, handle) here [servers.wyoming]")


def server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name in ("http", "wyoming"):
        where = getattr(args, name, None)
        if where is not None:
            overrides[f"servers.{name}.enabled"] = True
            overrides[f"servers.{name}.host"] = where[0]
            overrides[f"servers.{name}.port"] = where[1]
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help=f"settings file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)")
    parser.add_argument("--keywords", type=Path, metavar="FILE",
                        help="wake words the Wyoming wake service spots [wake.keywords_file]")
    parser.add_argument("--model-dir", type=Path, metavar="DIR", help="models folder [paths.models_dir]")
    parser.add_argument("--kws-model", type=Path, metavar="DIR", help="wake word model [wake.model_dir]")
    parser.add_argument("--asr-model", type=Path, metavar="DIR", help="streaming ASR model [asr.model_dir]")
    parser.add_argument("--llm-model", type=Path, metavar="DIR", help="exported MiniMind [llm.model_dir]")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="[logging.level]")


def run(args: argparse.Namespace) -> int:
    from assistant.servers.runner import any_enabled, check_servers

    overrides = {
        "wake.keywords_file": args.keywords,
        "paths.models_dir": args.model_dir,
        "wake.model_dir": args.kws_model,
        "asr.model_dir": args.asr_model,
        "llm.model_dir": args.llm_model,
        "logging.level": args.log_level,
        **server_overrides(args),
    }
    settings = load_settings(find_config(args.config), overrides)
    setup_logging(settings.logging.level)
    if not any_enabled(settings):
        raise ConfigError("nothing to serve: pass --http HOST:PORT or --wyoming HOST:PORT, or set "
                          "servers.http.enabled / servers.wyoming.enabled in the config")
    check_servers(settings)  # an unprotected LAN address fails before any model loads
    keywords = load_keyword_list(settings) if settings.wake.keywords_file is not None else None
    shared = build_shared(settings, keywords, None)
    return asyncio.run(_serve(settings, shared))


async def _serve(settings: Settings, shared: Any) -> int:
    from assistant.servers.hub import EventHub
    from assistant.servers.runner import start_servers
    from assistant.servers.work import VoiceGate

    loop = asyncio.get_running_loop()
    hub = EventHub(VoiceGate(settings.servers.limits.voice_hold_s), voice=False)
    notifier = Notifier()
    stop = asyncio.Event()
    # Before the servers start (they log "listening on"): a SIGTERM from then on always stops cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        servers = await start_servers(settings, shared, hub)
    except BaseException:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        raise
    notifier.ready()
    notifier.status("serving " + ", ".join(f"{name} :{port}" for name, port in servers.ports.items()))
    try:
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await servers.close()
        notifier.close()
    return OK
