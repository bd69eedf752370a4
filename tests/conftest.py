"""Shared fixtures. Assets live in ../shared/assets and are never copied into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve()
ASSETS = SHARED / "assets"
REFERENCE = SHARED / "reference"


def require(path: Path) -> Path:
    """Return `path` if it exists. Missing shared data fails loudly under CI and skips elsewhere."""
    if path.exists():
        return path
    message = f"shared test data missing: {path} (tests expect ../shared beside the checkout)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def assets() -> Path:
    return require(ASSETS)


@pytest.fixture(scope="session")
def reference() -> Path:
    return require(REFERENCE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """CLIs called in-process (cli.main) install root log handlers bound to that test's captured stderr;
    left behind, the next test's log lines hit a closed stream. Put the root logger back after each test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
