"""The daemon as systemd runs it: a subprocess talking sd_notify to a real AF_UNIX datagram socket.

The daemon reads 16 kHz s16le PCM on stdin (`--input -`), so each test decides when audio arrives relative to
a signal; the English KWS model is both wake word and ASR, the tiny int8 MiniMind export answers. Every wait
has a deadline and nothing asserts on timing.

Why ~470 lines: the subprocess harness (notify socket, output readers, deadlines) serves only these tests, and
each systemd behaviour (READY, WATCHDOG, STOPPING, reload, exit codes) is one test against it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import CONFIG
from speechdata.assets import JFK, KWS_EN
from speechdata.audio import load_clip, silence
from tests.conftest import ASSETS, REPO, require
from tests.support.cli import write_config
from tests.support.service import (
    START_TIMEOUT_S,
    STEP_TIMEOUT_S,
    NotifySocket,
    Service,
    _config_body,
    _daemon_argv,
)


@pytest.fixture()
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_clip(require(JFK))


@pytest.fixture()
def workdir(tmp_path: Path, tiny_llm: Path) -> Path:
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS @FELLOW_AMERICANS\n", encoding="utf-8")
    write_config(tmp_path, _config_body(tiny_llm))
    return tmp_path


@pytest.fixture()
def start(workdir: Path, notify: NotifySocket) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def _start(argv: list[str] | None = None) -> Service:
        service = Service(argv or _daemon_argv(workdir), workdir, notify)
        started.append(service)
        return service

    yield _start
    for service in started:
        service.kill()


def _one_utterance(service: Service, jfk: np.ndarray) -> None:
    """JFK (wake word "fellow Americans" ~2 s in, then the question) and enough silence for the endpoint."""
    service.feed(jfk, silence(3.0))


# ------------------------------------------------------------------------------------------------- tests


def test_ready_watchdog_status_cycle_and_stopping(start: Callable[..., Service], jfk: np.ndarray) -> None:
    service = start()
    service.feed(silence(0.5))
    (ready,) = service.wait_notify("READY", "1", timeout=START_TIMEOUT_S)
    assert ready["MAINPID"] == str(service.proc.pid)
    # WATCHDOG_PID matched (set as systemd does): the event loop pings every WATCHDOG_USEC/2.
    service.wait_notify("WATCHDOG", "1", count=3)

    _one_utterance(service, jfk)
    service.wait_event("reply")
    service.wait_event("state", state="idle")
    wake = service.of("wake")[0]
    assert wake["label"] == "FELLOW_AMERICANS"
    statuses = service.wait(lambda: [s for s in service.notify.statuses() if s.startswith("idle (last wake")],
                            "STATUS idle with the last wake time")
    history = service.notify.statuses()
    assert history[0] == "idle"
    kinds = [s.split()[0].rstrip(":") for s in history]
    assert kinds == ["idle", "listening", "thinking", "idle"], history
    assert all("(last wake " in s for s in history[1:]), history
    assert history[2].startswith("thinking: "), history  # what was heard, for `systemctl status`
    assert statuses[-1] == history[-1]
    pings = len(service.notify.with_key("WATCHDOG"))

    # Still running (stdin open, no audio): SIGTERM stops it cleanly while it waits for input.
    service.wait_notify("WATCHDOG", "1", count=pings + 2)
    service.signal(signal.SIGTERM)
    service.wait_notify("STOPPING", "1")
    assert service.finish() == 0, service.dump()
    assert "Traceback" not in "".join(service.stderr)
    # (a watchdog ping may still slip out between STOPPING and the loop's end: systemd ignores it)
    assert len(service.notify.with_key("READY")) == 1, service.notify.messages
    assert len(service.notify.with_key("STOPPING")) == 1, service.notify.messages


def test_config_error_exits_config_before_ready(
    workdir: Path, start: Callable[..., Service], notify: NotifySocket
) -> None:
    config = workdir / "config.yaml"
    config.write_text(config.read_text() + "service:\n  watchdgo: true\n")
    service = start()
    code = service.finish()
    assert code == CONFIG, service.dump()
    stderr = "".join(service.stderr)
    assert "service.watchdgo" in stderr and str(config) in stderr and "Traceback" not in stderr
    time.sleep(0.3)  # let any datagram still in flight arrive
    assert not notify.with_key("READY"), notify.messages


def test_sighup_keywords_invalid_keeps_old_then_valid_swaps(
    workdir: Path, start: Callable[..., Service], jfk: np.ndarray
) -> None:
    keywords = workdir / "keywords.txt"
    service = start()
    service.feed(silence(0.5))
    service.wait_notify("READY", "1", timeout=START_TIMEOUT_S)

    # An invalid keywords file: the reload is refused with the reason, the old keyword keeps working.
    keywords.write_text("FELLOW AMERICANS\n\u2603 SNOWMAN\n", encoding="utf-8")
    service.signal(signal.SIGHUP)
    service.wait_notify("RELOADING", "1")
    service.wait_notify("READY", "1", count=2)
    failure = service.wait_log("reload failed")
    assert f"{keywords}:2" in failure and "keeping the old" in failure
    _one_utterance(service, jfk)
    service.wait_event("reply")
    service.wait_event("state", state="idle")
    assert [w["label"] for w in service.of("wake")] == ["FELLOW_AMERICANS"]

    # A valid new file: the next wake is on the new keyword, in the same audio stream (t keeps counting).
    keywords.write_text("COUNTRY @COUNTRY\n", encoding="utf-8")
    before_s = service.fed_s
    service.signal(signal.SIGHUP)
    service.wait_notify("RELOADING", "1", count=2)
    service.wait_notify("READY", "1", count=3)
    service.feed(silence(0.3))  # the swap happens between two chunks
    applied = service.wait_log("reloaded")
    assert "COUNTRY" in applied
    _one_utterance(service, jfk)
    service.wait_event("reply", count=2)
    service.end_input()
    assert service.finish() == 0, service.dump()
    wakes = service.of("wake")
    assert [w["label"] for w in wakes] == ["FELLOW_AMERICANS", "COUNTRY"], wakes
    assert wakes[1]["t"] > before_s
    assert "Traceback" not in "".join(service.stderr)


def test_sighup_while_the_models_load_is_done_once_running(
    workdir: Path, start: Callable[..., Service]
) -> None:
    service = start()
    service.wait_log("keyword sequences")  # the keywords are parsed; the models are loading now
    (workdir / "keywords.txt").write_text("COUNTRY @COUNTRY\n", encoding="utf-8")
    service.signal(signal.SIGHUP)  # the default action would kill the daemon before READY
    service.wait_notify("READY", "1", count=2, timeout=START_TIMEOUT_S)
    kinds = [key for m in service.notify.messages for key in ("READY", "RELOADING") if key in m]
    assert kinds == ["READY", "RELOADING", "READY"], service.notify.messages
    service.feed(silence(0.3))
    assert "COUNTRY" in service.wait_log("reloaded")
    service.end_input()
    assert service.finish() == 0, service.dump()


def test_sighup_reloads_config_and_keeps_the_old_one_when_bad(
    workdir: Path, start: Callable[..., Service], tiny_llm: Path, jfk: np.ndarray
) -> None:
    config = workdir / "config.yaml"
    service = start()
    service.feed(silence(0.5))
    service.wait_notify("READY", "1", timeout=START_TIMEOUT_S)

    # Out of range: refused, naming the key; the running threshold (0.25) stays and the wake fires.
    write_config(workdir, _config_body(tiny_llm, "  keywords_threshold: 5\n"))
    service.signal(signal.SIGHUP)
    service.wait_notify("READY", "1", count=2)
    failure = service.wait_log("reload failed")
    assert "wake.keywords_threshold" in failure and str(config) in failure
    _one_utterance(service, jfk)
    service.wait_event("reply")
    service.wait_event("state", state="idle")

    # A threshold no keyword reaches: after the reload the same audio no longer wakes it. The audio stream
    # is not reopened, so an audio setting is reported as needing a restart instead of looking applied.
    write_config(workdir, _config_body(tiny_llm, "  keywords_threshold: 0.99\n", "  block_ms: 200\n"))
    service.signal(signal.SIGHUP)
    (_, _, ready) = service.wait_notify("READY", "1", count=3)
    assert ready["STATUS"].startswith("idle (last wake "), ready
    service.feed(silence(0.3))
    applied = service.wait_log("reloaded")
    assert "wake.keywords_threshold 0.25 -> 0.99" in applied
    assert "needs a restart: audio.block_ms" in applied
    assert any("WARNING" in line and "audio.block_ms" in line for line in service.stderr)
    _one_utterance(service, jfk)
    service.end_input()
    assert service.finish() == 0, service.dump()
    assert len(service.of("wake")) == 1, service.of("wake")
    assert len(service.of("reply")) == 1
    assert "Traceback" not in "".join(service.stderr)


def test_unit_exec_start_with_models_fetched_from_the_mirror(
    tmp_path: Path, tiny_llm: Path, notify: NotifySocket
) -> None:
    """As a new user: `models fetch kws-en --mirror`, then the unit's own ExecStart line, started by hand."""
    assets = require(ASSETS)
    models_dir = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if k not in ("ASSISTANT_MIRROR", "ASSISTANT_MODELS_DIR")}
    assistant = [sys.executable, "-m", "assistant"]
    fetched = subprocess.run(
        [*assistant, "models", "fetch", "kws-en", "--mirror", str(assets), "--models-dir", str(models_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip() == str(models_dir / "kws-en")

    keywords = tmp_path / "keywords.txt"
    keywords.write_text((REPO / "examples" / "keywords-en.txt").read_text(encoding="utf-8"), encoding="utf-8")
    unit = subprocess.run(
        [*assistant, "install-service", "--dry-run", "--keywords", str(keywords)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert unit.returncode == 0, unit.stderr
    lines = unit.stdout.splitlines()
    (exec_start,) = [line.split("=", 1)[1] for line in lines if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "assistant" and argv[1] == "run"
    # The repo's config.yaml with the fetched models; the LLM is the tiny test export, the mic is the clip.
    argv += ["--model-dir", str(models_dir), "--llm-model", str(tiny_llm)]
    argv += ["--input", str(require(JFK)), "--json"]
    service = Service(argv, REPO, notify)
    try:
        service.end_input()
        code = service.finish(timeout=START_TIMEOUT_S + STEP_TIMEOUT_S)
    finally:
        service.kill()
    assert code == 0, service.dump()
    assert [w["label"] for w in service.of("wake")] == ["fellow_americans"], service.dump()
    assert service.of("final") and service.of("reply")
    assert service.notify.with_key("READY", "1")


def test_models_fetch_takes_mirror_and_models_dir_from_the_config(tmp_path: Path) -> None:
    """paths.mirror is the config equivalent of --mirror; a relative folder is relative to the config file."""
    assets = require(ASSETS)
    (tmp_path / "offline").symlink_to(assets, target_is_directory=True)
    (tmp_path / "config.yaml").write_text("paths:\n  models_dir: my-models\n  mirror: offline\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ASSISTANT_MIRROR", "ASSISTANT_MODELS_DIR")}
    env["PYTHONPATH"] = str(REPO)
    fetched = subprocess.run(
        [sys.executable, "-m", "assistant", "models", "fetch", "kws-en"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert fetched.returncode == 0, fetched.stderr
    target = tmp_path / "my-models" / "kws-en"
    assert fetched.stdout.strip() == str(target)
    receipt = json.loads((target / ".fetched.json").read_text())
    assert receipt["source"] == f"mirror {(tmp_path / 'offline').resolve()}"
