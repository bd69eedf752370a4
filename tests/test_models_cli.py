"""`assistant models ...` as a user runs it: a subprocess, real manifest, ../shared/assets as the mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.errors import MODEL


def _assistant(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The console script a user types; `python -m assistant` where the project is not installed.
    script = Path(sys.prefix) / "bin" / "assistant"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "assistant"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _env(models_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ASSISTANT_MIRROR", "ASSISTANT_MODELS_DIR")}
    env["ASSISTANT_MODELS_DIR"] = str(models_dir)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout, not the editable install's
    env.update(extra)
    return env


def _listing(env: dict[str, str]) -> dict[str, dict]:
    result = _assistant("models", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_list_fetch_from_mirror_then_list_again(assets: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    env = _env(models_dir)
    before = _listing(env)
    assert len(before) == 12  # with minimind-3
    assert not any(row["installed"] for row in before.values())
    assert before["kws-en"]["license"] == "Apache-2.0"
    assert before["kws-en"]["bytes"] == 17626723

    fetched = _assistant("models", "fetch", "kws-en", "vad-silero", "--mirror", str(assets), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.split() == [str(models_dir / "kws-en"), str(models_dir / "vad-silero")]

    after = _listing(env)
    assert {name for name, row in after.items() if row["installed"]} == {"kws-en", "vad-silero"}
    assert after["kws-en"]["path"] == str(models_dir / "kws-en")

    located = _assistant("models", "path", "vad-silero", env=env)
    assert located.returncode == 0
    assert located.stdout.strip() == str(models_dir / "vad-silero")

    table = _assistant("models", "list", env=env)
    assert table.returncode == 0
    assert any(line.split()[:2] == ["kws-en", "installed"] for line in table.stdout.splitlines())


def test_mirror_from_the_environment(assets: Path, tmp_path: Path) -> None:
    env = _env(tmp_path / "models", ASSISTANT_MIRROR=str(assets))
    result = _assistant("models", "fetch", "kws-zh", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "kws-zh" / "tokens.txt").is_file()


def test_user_errors_are_one_line_with_the_model_exit_code(tmp_path: Path) -> None:
    env = _env(tmp_path / "models")
    unknown = _assistant("models", "fetch", "kws-xx", env=env)
    assert unknown.returncode == MODEL
    assert "unknown model 'kws-xx'; known models: kws-zh" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    missing = _assistant("models", "path", "asr-zh", env=env)
    assert missing.returncode == MODEL
    assert "assistant models fetch asr-zh" in missing.stderr

    unverified = _assistant("models", "fetch", "minimind2-small", "--mirror", str(tmp_path), env=env)
    assert unverified.returncode == MODEL
    assert "--allow-unverified" in unverified.stderr
    assert "Traceback" not in unverified.stderr
