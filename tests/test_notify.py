"""sd_notify against a real AF_UNIX datagram socket, and the journal logging handler."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from assistant.service.notify import Notifier, journal_logging_handler


@pytest.fixture()
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_reach_the_socket(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready(status="idle, models loaded")
    lines = _receive(notify_socket)
    assert lines[0] == "READY=1"
    assert f"MAINPID={os.getpid()}" in lines
    assert "STATUS=idle, models loaded" in lines

    assert notifier.status("thinking\nabout it")
    assert _receive(notify_socket) == ["STATUS=thinking about it"]  # one line: systemd shows the first only
    assert notifier.watchdog()
    assert _receive(notify_socket) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert _receive(notify_socket) == ["STOPPING=1"]
    assert notifier.reloading()
    reload_lines = _receive(notify_socket)
    assert reload_lines[0] == "RELOADING=1"
    assert reload_lines[1].startswith("MONOTONIC_USEC=") and int(reload_lines[1].split("=")[1]) > 0
    notifier.close()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edge-assistant-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        assert _receive(sock) == ["WATCHDOG=1"]
        notifier.close()
    finally:
        sock.close()


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("idle")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_send_failure_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.WARNING, logger="assistant.service.notify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert sum("sd_notify" in r.getMessage() for r in caplog.records) == 1  # warned once, not per ping


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_interval() == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None


def test_journal_handler_only_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert journal_logging_handler({}) is None
    stream = (tmp_path / "stderr.log").open("w+")
    monkeypatch.setattr(sys, "stderr", stream)
    st = os.fstat(stream.fileno())
    assert journal_logging_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}) is None
    handler = journal_logging_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert handler is not None
    if handler.__class__.__name__ == "JournalHandler":
        pytest.skip("systemd-python is installed: records go to journald, not stderr")
    logger = logging.getLogger("assistant.test_journal")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.warning("audio overflow %d", 3)
        logger.error("model missing")
        logger.info("wake")
    finally:
        logger.removeHandler(handler)
    stream.flush()
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    assert lines == [
        "<4>assistant.test_journal: audio overflow 3",
        "<3>assistant.test_journal: model missing",
        "<6>assistant.test_journal: wake",
    ]
