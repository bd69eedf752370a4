"""The systemd units: what the daemon relies on, `systemd-analyze verify`, exposure score, install-service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.commands import install_service
from assistant.errors import CONFIG, USAGE
from tests.conftest import needs_tool

REPO = Path(__file__).resolve().parents[1]
SYSTEM_UNIT = REPO / "assistant" / "service" / "units" / "assistant.service"
USER_UNIT = REPO / "assistant" / "service" / "units" / "assistant-user.service"


def _directives(path_or_text: Path | str) -> dict[str, list[str]]:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _systemd_analyze() -> str:
    return needs_tool("systemd-analyze", "apt-get install -y systemd (needed to verify the units)")


def _rendered(tmp_path: Path, *, user_mode: bool) -> Path:
    """The unit as install-service writes it, with ExecStart pointing at this venv's `assistant`."""
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("HEY COMPUTER\n")
    plan = install_service.make_plan(user_mode=user_mode, keywords=keywords)
    path = tmp_path / ("user" if user_mode else "system") / "assistant.service"
    path.parent.mkdir()
    path.write_text(install_service.render_unit(plan))
    return path


def test_system_unit_has_what_the_daemon_needs() -> None:
    d = _directives(SYSTEM_UNIT)
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartSec": "5",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-alsa rw",
        "SupplementaryGroups": "audio",
        "ProtectSystem": "strict",
        "StateDirectory": "assistant",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX",
        "PrivateNetwork": "yes",
        "SystemCallFilter": "@system-service",
        "LockPersonality": "yes",
        "WantedBy": "multi-user.target",
    }.items():
        assert value in d.get(key, []), f"{key}={value} missing"
    # Restarting cannot fix a bad command line or config: the unit must agree with assistant/exitcodes.py.
    assert d["RestartPreventExitStatus"] == [f"{USAGE} {CONFIG}"]
    assert "PrivateDevices" not in d  # it would hide /dev/snd


def test_user_unit_is_for_desktops() -> None:
    d = _directives(USER_UNIT)
    assert d["Type"] == ["notify"]
    assert d["WantedBy"] == ["default.target"]
    assert d["RestartPreventExitStatus"] == [f"{USAGE} {CONFIG}"]
    assert "DeviceAllow" not in d and "SupplementaryGroups" not in d and "User" not in d


def test_render_fills_in_this_install(tmp_path: Path) -> None:
    keywords = tmp_path / "my keywords.txt"  # a space: ExecStart must quote it
    keywords.write_text("小爱同学\n")
    plan = install_service.make_plan(user_mode=False, keywords=keywords, service_user="voice")
    d = _directives(install_service.render_unit(plan))
    assistant = str(Path(sys.prefix) / "bin" / "assistant")
    assert d["ExecStart"] == [f'{assistant} run --config {REPO / "config.yaml"} --keywords "{keywords}"']
    assert d["WorkingDirectory"] == [str(REPO)]
    assert d["User"] == ["voice"] and d["Group"] == ["voice"]


def test_render_escapes_percent() -> None:
    assert install_service._quote("/srv/100%/kw.txt") == "/srv/100%%/kw.txt"


@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_generated_units_pass_systemd_analyze_verify(tmp_path: Path, user_mode: bool) -> None:
    tool = _systemd_analyze()
    unit = _rendered(tmp_path, user_mode=user_mode)
    env = dict(os.environ)
    command = [tool, "verify"]
    if user_mode:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)  # the user manager needs one, even offline
        command.append("--user")
    result = subprocess.run([*command, str(unit)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "assistant.service" not in result.stderr, (
        result.stderr
    )  # verify prints problems with the unit name


def test_system_unit_exposure_is_ok(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = _rendered(tmp_path, user_mode=False)
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for assistant\.service: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 4.0, match.group(0)  # 4.0 and below is "OK" (or "SAFE")


def _assistant(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", "install-service", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_install_service_dry_run(tmp_path: Path) -> None:
    system = _assistant("--dry-run")
    assert system.returncode == 0, system.stderr
    d = _directives(system.stdout)
    assert d["ExecStart"][0].startswith(str(Path(sys.prefix) / "bin" / "assistant") + " run --config ")
    assert d["User"] == ["assistant"]
    assert d["DeviceAllow"] == ["char-alsa rw"]

    user = _assistant("--user", "--dry-run")
    assert user.returncode == 0, user.stderr
    assert "DeviceAllow" not in _directives(user.stdout)

    missing = _assistant("--dry-run", "--keywords", str(tmp_path / "none.txt"))
    assert missing.returncode == CONFIG
    assert "keywords file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_install_service_user_writes_the_unit(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "install-service", "--user"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "config" / "systemd" / "user" / "assistant.service"
    assert _directives(unit)["Type"] == ["notify"]
    assert "systemctl --user daemon-reload" in result.stdout
