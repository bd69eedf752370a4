"""`python -m assistant ... --json` as a subprocess, and reading the JSON event lines it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from speechdata.assets import REPO


def write_config(directory: Path, text: str = "") -> Path:
    """A config.yaml for tests: short replies (the tiny model never stops early) plus `text`."""
    import yaml

    settings = yaml.safe_load(text) or {}
    llm = {"max_new_tokens": 16, "threads": 1, **(settings.get("llm") or {})}
    path = directory / "config.yaml"
    # One llm: section: a config with a key twice is an error (settings.py refuses duplicate keys).
    path.write_text(yaml.safe_dump({**settings, "llm": llm}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run_assistant(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
    """`python -m assistant ARGS --json` as a subprocess: (exit code, events, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "assistant", *args, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, parse_events(result.stdout), result.stderr


def parse_events(stdout: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for event in events:
        assert isinstance(event["event"], str) and isinstance(event["t"], int | float), event
    return events


def of(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]
