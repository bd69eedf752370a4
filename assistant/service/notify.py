"""systemd service glue: sd_notify (READY, STATUS, WATCHDOG, STOPPING, RELOADING) and journal logging.

Uses systemd-python (`pip install '.[systemd]'`) when it is importable and otherwise sends the datagrams
itself: the protocol is one AF_UNIX datagram of newline-separated KEY=VALUE lines to $NOTIFY_SOCKET (a path,
or an abstract socket written with a leading '@'). Outside systemd (no NOTIFY_SOCKET) every call is a no-op,
so the daemon calls these unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

try:  # optional: systemd-python
    from systemd import daemon as _sd_daemon  # type: ignore[import-not-found]
except ImportError:
    _sd_daemon = None


class Notifier:
    """Sends sd_notify messages; holds the socket so a watchdog ping is one sendto()."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        # systemd-python reads os.environ itself: use it only when we were not handed another environment.
        self._use_library = _sd_daemon is not None and environ is None
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one message of KEY=VALUE lines; False when disabled or the send failed (never raises)."""
        if self.address is None:
            return False
        message = "\n".join(lines)
        try:
            if self._use_library:
                return bool(_sd_daemon.notify(message))
            self._send(message.encode())
            return True
        except OSError as exc:
            # A service manager that stopped listening must not take the assistant down with it.
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
                self._warned = True
            return False

    def _send(self, payload: bytes) -> None:
        address = self.address or ""
        target = "\0" + address[1:] if address.startswith("@") else address
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.sendto(payload, target)

    def ready(self, status: str | None = None) -> bool:
        """Models are loaded and audio flows: systemd marks the unit started (Type=notify)."""
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        """Free-form state shown by `systemctl status`, e.g. 'idle; last wake 12:03:04'."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive: send it from the event loop at least every watchdog_interval()/2 seconds."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """Before a SIGHUP reload; send ready() when done. Newer systemd requires MONOTONIC_USEC."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """WatchdogSec in seconds when the watchdog is on for this process, else None."""
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None  # the variables were meant for another process (we were started by the service)
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1e6 if usec > 0 else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# syslog priorities (sd-daemon.h SD_* prefixes): journald reads a leading "<N>" on each stderr line.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class _PrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_priority(record.levelno)}>{super().format(record)}"


def journal_logging_handler(environ: Mapping[str, str] | None = None) -> logging.Handler | None:
    """A handler that logs to the journal with priority levels when stderr is the journal, else None.

    systemd sets JOURNAL_STREAM to stderr's "device:inode" when it connects it to journald. The handler is
    systemd-python's JournalHandler when installed (structured fields), else stderr with "<N>" prefixes.
    """
    env = os.environ if environ is None else environ
    if not _stderr_is_journal(env.get("JOURNAL_STREAM", "")):
        return None
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-not-found]
    except ImportError:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PrefixFormatter("%(name)s: %(message)s"))
        return handler
    handler = JournalHandler(SYSLOG_IDENTIFIER="assistant")
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def _stderr_is_journal(journal_stream: str) -> bool:
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == device and st.st_ino == inode


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
