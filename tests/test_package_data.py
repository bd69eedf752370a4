"""What the runtime reads besides code ships inside the package (issue 15, item 13).

The shipped copies of config.yaml and the example wake words stay identical to the repo-root files a checkout
user reads; `assistant example` prints them; and scripts/check_wheel.sh installs the built wheel into a fresh
venv outside the checkout and runs it from there (marked `wheel`: CI runs it, `-m "not wheel"` skips it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.commands import install_service
from assistant.data import EXAMPLES, read_example
from assistant.service import unit
from tests.conftest import ASSETS, REPO, require

CHECKOUT_COPIES = {
    "config": REPO / "config.yaml",
    "keywords-en": REPO / "examples" / "keywords-en.txt",
    "keywords-zh": REPO / "examples" / "keywords-zh.txt",
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_shipped_example_is_identical_to_the_checkout_file(name: str) -> None:
    assert read_example(name) == CHECKOUT_COPIES[name].read_text(encoding="utf-8"), (
        f"assistant/data/{EXAMPLES[name]} and {CHECKOUT_COPIES[name].relative_to(REPO)} differ: edit both"
    )


def test_every_shipped_file_is_declared_as_package_data() -> None:
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert set(EXAMPLES.values()) <= {
        f for pattern in declared["assistant.data"] for f in os.listdir(REPO / "assistant" / "data")
        if Path(f).match(pattern)
    }
    assert "units/*.service" in declared["assistant.service"]


def test_unit_templates_are_read_from_the_package() -> None:
    assert "[Install]" in unit.template_text(user_mode=False)
    assert "WantedBy=default.target" in unit.template_text(user_mode=True)


def test_working_dir_outside_a_checkout_is_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(install_service, "REPO", tmp_path / "site-packages-like")  # no pyproject.toml there
    monkeypatch.chdir(tmp_path)
    assert install_service._default_working_dir() == tmp_path


def _assistant(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_example_command_prints_and_writes_without_overwriting(tmp_path: Path) -> None:
    listed = _assistant("example", cwd=tmp_path)
    assert listed.returncode == 0 and all(name in listed.stdout for name in EXAMPLES)
    printed = _assistant("example", "keywords-zh", cwd=tmp_path)
    assert printed.returncode == 0 and printed.stdout == read_example("keywords-zh")
    written = _assistant("example", "config", "--out", "config.yaml", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "config.yaml").read_text() == read_example("config")
    (tmp_path / "config.yaml").write_text("mine\n")
    again = _assistant("example", "config", "--out", "config.yaml", cwd=tmp_path)
    assert again.returncode == 3 and "exists already" in again.stderr
    assert (tmp_path / "config.yaml").read_text() == "mine\n"


@pytest.mark.wheel
def test_wheel_installs_and_runs_outside_the_checkout(tiny_llm: Path) -> None:  # noqa: F811
    require(ASSETS / "kws" / "en-gigaspeech-3.3M-mobile")
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the files that go into the wheel")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_wheel.sh"), "--llm", str(tiny_llm)],
        capture_output=True,
        text=True,
        timeout=900,  # a first run downloads the dependency wheels from PyPI
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "check_wheel: ok" in result.stdout
