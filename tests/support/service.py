"""A daemon run as systemd runs it: a subprocess with a real notify socket, fed PCM on stdin (tests/test_service.py
and tests/test_sighup_burst.py)."""

from __future__ import annotations

import json
import os
import queue
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speechdata.assets import KWS_EN
from tests.conftest import REPO

WATCHDOG_USEC = 200_000  # pings every 0.1 s: a few arrive within any wait below
START_TIMEOUT_S = 90.0  # import + model loads on 2 busy shared cores
STEP_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------------------------ harness


def _wait(predicate: Callable[[], Any], timeout: float, what: str, dump: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{dump()}")


class NotifySocket:
    """The service manager's side of sd_notify: a bound datagram socket, messages collected by a thread."""

    def __init__(self, directory: Path) -> None:
        path = directory / "notify"
        if len(str(path)) >= 100:  # sun_path holds 108 bytes
            path = Path(tempfile.mkdtemp(prefix="sdn-")) / "notify"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def with_key(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for m in list(self.messages) if key in m and (value is None or m[key] == value)]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in list(self.messages) if "STATUS" in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Service:
    """`assistant` started like systemd does it: NOTIFY_SOCKET, WATCHDOG_USEC and a matching WATCHDOG_PID."""

    def __init__(self, argv: list[str], cwd: Path, notify: NotifySocket) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_"))}
        env.update(
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            NOTIFY_SOCKET=str(notify.path),
            WATCHDOG_USEC=str(WATCHDOG_USEC),
        )
        # systemd sets WATCHDOG_PID to the main pid: `exec` keeps the shell's pid ($$) for the daemon.
        command = "WATCHDOG_PID=$$ exec " + shlex.join(argv)
        self.notify = notify
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.fed_s = 0.0  # seconds of audio handed to the feeder so far
        self._audio: queue.Queue[bytes | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._feed, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def _feed(self) -> None:
        # Writes block while the daemon is busy: a thread keeps the test's waits bounded.
        assert self.proc.stdin is not None
        while (data := self._audio.get()) is not None:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return
        self.proc.stdin.close()

    def feed(self, *parts: np.ndarray) -> None:
        samples = np.concatenate(parts)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        self._audio.put(pcm.tobytes())
        self.fed_s += len(samples) / 16000

    def end_input(self) -> None:
        self._audio.put(None)

    def dump(self) -> str:
        return (
            f"notify: {self.notify.messages[-12:]}\nevents: {self.events[-12:]}\n"
            f"stderr:\n{''.join(self.stderr[-30:])}"
        )

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT_S) -> Any:
        def check() -> Any:
            found = predicate()
            if not found and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode} waiting for {what}\n"
                                     f"{self.dump()}")
            return found

        return _wait(check, timeout, what, self.dump)

    def wait_notify(self, key: str, value: str | None = None, *, count: int = 1,
                    timeout: float = STEP_TIMEOUT_S) -> list[dict[str, str]]:
        def found() -> list[dict[str, str]]:
            hits = self.notify.with_key(key, value)
            return hits if len(hits) >= count else []

        return self.wait(found, f"{count} x {key}={value or '*'} on the notify socket", timeout)

    def wait_event(self, name: str, *, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            hits = self.of(name, **fields)
            return hits if len(hits) >= count else []

        return self.wait(found, f"{count} x {name} {fields or ''} event")

    def wait_log(self, text: str) -> str:
        return self.wait(lambda: next((line for line in list(self.stderr) if text in line), None),
                         f"log line with {text!r}")

    def of(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == name
                and all(e.get(k) == v for k, v in fields.items())]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = STEP_TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout:g} s\n{self.dump()}") from None
        for thread in self._threads[:2]:
            thread.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._audio.put(None)


def _config_body(llm: Path, wake_extra: str = "", audio_extra: str = "") -> str:
    return (
        f"llm:\n  model_dir: {llm}\n"
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n{wake_extra}"
        f"audio:\n  input: '-'\n{audio_extra}"
        "logging:\n  json: true\n"
    )


def _daemon_argv(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "assistant", "--config", str(workdir / "config.yaml")]
