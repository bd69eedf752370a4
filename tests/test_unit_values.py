"""install-service refuses unit-file injection and quotes paths the way systemd reads them (issue 15, item 12)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.commands import install_service
from assistant.errors import CONFIG, USAGE, ConfigError
from assistant.service import unit
from tests.conftest import REPO

INJECTION = "\nExecStartPre=+/bin/sh -c id"


def _install_service(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", "install-service", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool:
        return tool
    message = "systemd-analyze not found: apt-get install -y systemd (needed to verify the units)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_systemd_analyze(), "verify", str(unit_file)], capture_output=True, text=True, timeout=60
    )


def test_service_user_injection_is_refused_naming_the_flag() -> None:
    result = _install_service("--service-user", "root" + INJECTION)
    assert result.returncode == USAGE, result.stdout
    assert "--service-user" in result.stderr and "not a valid user name" in result.stderr
    assert "ExecStartPre" not in result.stdout


@pytest.mark.parametrize("name", ["root x", "", "-root", "Root", "a" * 33, "r%n", "r$x", "ro\tot", "1st"])
def test_bad_user_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="--service-user"):
        unit.check_user_name(name)


@pytest.mark.parametrize("name", ["assistant", "_voice", "pi", "voice-1", "a" * 32])
def test_posix_user_names_pass(name: str) -> None:
    assert unit.check_user_name(name) == name


@pytest.mark.parametrize("flag", ["--keywords", "--config", "--working-dir"])
def test_path_injection_is_refused_naming_the_flag(tmp_path: Path, flag: str) -> None:
    # The file exists, so only its name is wrong (no "/" in a file name: the command is `id` from PATH).
    hostile = tmp_path / "kw\nExecStartPre=+id"
    hostile.mkdir() if flag == "--working-dir" else hostile.write_text("HEY COMPUTER\n")
    result = _install_service(flag, str(hostile))
    assert result.returncode == CONFIG, result.stdout
    assert flag in result.stderr and "control character" in result.stderr
    assert "ExecStartPre" not in result.stdout and "Traceback" not in result.stderr


def test_undecodable_path_is_refused(tmp_path: Path) -> None:
    name = os.fsdecode(b"kw\xff.txt")  # a surrogate escape, as Python gives argv bytes that are not UTF-8
    (tmp_path / name).write_text("HEY COMPUTER\n")
    with pytest.raises(ConfigError, match="--keywords: .*undecodable"):
        install_service.make_plan(user_mode=True, keywords=tmp_path / name)


def test_executable_with_a_quote_is_refused(tmp_path: Path) -> None:
    venv = tmp_path / "it's" / "bin"
    venv.mkdir(parents=True)
    exe = venv / "assistant"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    with pytest.raises(ConfigError, match="quote or backslash"):
        install_service.make_plan(user_mode=False, executable=exe, working_dir=tmp_path)


def _systemd_words(value: str) -> list[str]:
    """ExecStart's words as systemd.syntax(7) and systemd.service(7) define them: double quotes with C escapes,
    then `%%` -> `%` (specifiers) and `$$` -> `$` (no environment substitution). Only what exec_word emits."""
    words = []
    for quoted, plain in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', value):
        word = re.sub(r"\\(.)", r"\1", quoted) if quoted or not plain else plain
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


ODD = ["my keywords.txt", "100%n.txt", "$HOME ${X}.txt", 'say "hi".txt', "back\\slash.txt", "it's.txt", "a;b"]


def test_exec_words_round_trip() -> None:
    for name in ODD:
        path = f"/srv/odd dir/{name}"
        assert _systemd_words(unit.exec_word(path)) == [path], name


def test_odd_paths_render_to_a_unit_systemd_accepts(tmp_path: Path) -> None:
    # Install folder, venv, config and keywords all with spaces, specifiers and dollars in their names.
    root = tmp_path / "edge assistant 100%n $HOME"
    exe = root / ".venv" / "bin" / "assistant"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    config = root / "my config.yaml"
    config.write_text("{}\n")
    keywords = root / ODD[4]
    keywords.write_text("HEY COMPUTER\n")
    for user_mode in (False, True):
        plan = install_service.make_plan(
            user_mode=user_mode, config=config, keywords=keywords, executable=exe, working_dir=root
        )
        text = install_service.render_unit(plan)
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        assert _systemd_words(exec_start.removeprefix("ExecStart=")) == [
            str(exe), "run", "--config", str(config), "--keywords", str(keywords)
        ]
        assert f"WorkingDirectory={str(root).replace('%', '%%')}\n" in text
        written = tmp_path / ("user" if user_mode else "system") / "assistant.service"
        written.parent.mkdir()
        written.write_text(text)
        if not user_mode:
            # verify checks that ExecStart's first word, unquoted and unescaped by systemd, is this executable.
            result = _verify(written)
            assert result.returncode == 0, result.stderr
            assert "assistant.service" not in result.stderr, result.stderr


def test_systemd_reads_the_executable_word_back(tmp_path: Path) -> None:
    """A control: the same unit with the executable left unescaped fails verify, so the check above is real."""
    root = tmp_path / "dir 100%n"
    exe = root / "assistant"
    root.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    good = tmp_path / "good.service"
    good.write_text(f"[Service]\nExecStart={unit.exec_path(exe, 'x')} run\n")
    assert _verify(good).returncode == 0
    bad = tmp_path / "bad.service"
    bad.write_text(f'[Service]\nExecStart="{exe}" run\n')  # the % is read as a specifier
    assert _verify(bad).returncode != 0
