"""Who may connect: loopback needs nothing; any other address needs a bearer token or an explicit opt-out."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from assistant.errors import ConfigError
from assistant.settings import ServersSettings

log = logging.getLogger(__name__)

CREDENTIAL = "assistant-token"  # systemd: LoadCredential=assistant-token:/etc/assistant/token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: may resolve to anything


def resolve_token(servers: ServersSettings) -> str | None:
    """servers.token, else $CREDENTIALS_DIRECTORY/assistant-token (systemd), else None."""
    if servers.token:
        return servers.token
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / CREDENTIAL
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the server token {path}: {exc}") from None
        if token:
            return token
    return None


def check_bind(name: str, host: str, servers: ServersSettings, token: str | None, *, takes_token: bool) -> None:
    """Refuse a LAN address without protection (CONFIG error); warn when the user opted out of it."""
    if is_loopback(host):
        return
    if token and takes_token:
        return
    if servers.allow_unauthenticated_lan:
        log.warning("%s server on %s has NO authentication (servers.allow_unauthenticated_lan: true): anyone "
                    "who reaches this address can use the models", name, host)
        return
    need = "servers.token (or $CREDENTIALS_DIRECTORY/assistant-token)" if takes_token else "nothing it can check"
    raise ConfigError(
        f"servers.{name}.host {host!r} is not a loopback address: the {name} server needs {need}; "
        "set servers.allow_unauthenticated_lan: true to serve it anyway, or bind 127.0.0.1"
    )
