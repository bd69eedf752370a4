"""Start the servers the settings enable, in the running event loop, and stop them again."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import ConfigError
from assistant.servers.auth import check_bind, resolve_token
from assistant.servers.hub import EventHub
from assistant.servers.shared import Answerer, Intent, Shared
from assistant.servers.work import ModelWork
from assistant.settings import Settings

log = logging.getLogger(__name__)


def any_enabled(settings: Settings) -> bool:
    servers = settings.servers
    return servers.http.enabled or servers.wyoming.enabled


def check_servers(settings: Settings) -> str | None:
    """Before any model loads: refuse an unprotected LAN bind (ConfigError). Returns the token, if any."""
    servers = settings.servers
    wanted = ((servers.http.enabled, "aiohttp"), (servers.wyoming.enabled, "wyoming"),
              (servers.wyoming.enabled and servers.wyoming.zeroconf, "zeroconf"))
    for enabled, package in wanted:
        if enabled and importlib.util.find_spec(package) is None:
            raise ConfigError(f"the {package} package is not installed: pip install 'edge-assistant[servers]'")
    token = resolve_token(servers)
    if servers.http.enabled:
        check_bind("http", servers.http.host, servers, token, takes_token=True)
    if servers.wyoming.enabled:
        check_bind("wyoming", servers.wyoming.host, servers, token, takes_token=False)
    return token


@dataclass
class Servers:
    """The running servers; `ports` maps "http"/"wyoming" to the port bound (useful with port 0)."""

    work: ModelWork
    hub: EventHub
    answerer: Answerer
    wyoming: Any = None  # the WyomingServer, when enabled
    ports: dict[str, int] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()
        self.work.close()


async def start_servers(
    settings: Settings, shared: Shared, hub: EventHub, *, intents: Sequence[Intent] = ()
) -> Servers:
    servers = settings.servers
    token = check_servers(settings)
    assert hub.gate is not None, "the hub drives the voice gate"
    work = ModelWork(servers.limits, hub.gate)
    answerer = Answerer(shared, intents)
    running = Servers(work=work, hub=hub, answerer=answerer)
    try:
        if servers.http.enabled:
            from assistant.servers.http import make_app, start_http

            app = make_app(shared, work, hub, answerer, token)
            runner, port = await start_http(app, servers.http.host, servers.http.port)
            running._closers.append(runner.cleanup)
            running.ports["http"] = port
        if servers.wyoming.enabled:
            from assistant.servers.wyoming import start_wyoming

            server = await start_wyoming(settings, shared, work, answerer, hub)
            running._closers.append(server.close)
            running.ports["wyoming"] = server.port
            running.wyoming = server
    except OSError as exc:
        await running.close()
        raise ConfigError(f"servers: cannot listen ({exc}); pick another servers.*.port or --http/--wyoming "
                          "HOST:PORT") from None
    except BaseException:
        await running.close()
        raise
    return running
