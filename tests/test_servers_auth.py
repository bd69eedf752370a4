"""Who may connect: loopback needs nothing, a LAN address needs a token (config or systemd credential) or the
explicit opt-out; Wyoming (no auth in the protocol) only the opt-out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from assistant.errors import ConfigError
from assistant.servers.auth import check_bind, is_loopback, resolve_token
from assistant.settings import ServersSettings


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "my-pi.local"))


def test_token_from_config_then_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert resolve_token(ServersSettings()) is None
    assert resolve_token(ServersSettings(token="abc")) == "abc"
    (tmp_path / "assistant-token").write_text("from-systemd\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_token(ServersSettings()) == "from-systemd"
    assert resolve_token(ServersSettings(token="abc")) == "abc"  # the config wins


def test_lan_bind_rules(caplog: pytest.LogCaptureFixture) -> None:
    plain = ServersSettings()
    check_bind("http", "127.0.0.1", plain, None, takes_token=True)
    check_bind("http", "0.0.0.0", plain, "tok", takes_token=True)
    with pytest.raises(ConfigError, match="servers.http.host '0.0.0.0' is not a loopback address"):
        check_bind("http", "0.0.0.0", plain, None, takes_token=True)
    with pytest.raises(ConfigError, match="allow_unauthenticated_lan"):
        check_bind("wyoming", "192.168.1.5", plain, "tok", takes_token=False)
    opted = ServersSettings(allow_unauthenticated_lan=True)
    with caplog.at_level(logging.WARNING):
        check_bind("wyoming", "0.0.0.0", opted, None, takes_token=False)
    assert "NO authentication" in caplog.text
