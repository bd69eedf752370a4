"""Shared helpers of the daemon tests: an int8 MiniMind export made once per session, and running `assistant`.

The LLM is exported with the project's exporter from the tiny random-weight reference checkpoint: its replies
are gibberish, but every step (export, int8 graph, KV cache, tokenizer, streaming) is the real one.
Import the fixture into a test module with `from tests.llm_fixture import tiny_llm  # noqa: F401`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ASSETS, REFERENCE, REPO, require

KWS_EN = ASSETS / "kws" / "en-gigaspeech-3.3M-mobile"
KWS_ZH = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile"
AUDIO = ASSETS / "audio"
JFK_TEXT = "ask not what your country can do for you ask what you can do for your country"

_exported: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of an int8 export of minimind2-dense-tiny-random.pth (exported once per test session)."""
    if "tiny" not in _exported:
        checkpoint = require(REFERENCE / "minimind2" / "minimind2-dense-tiny-random.pth")
        tokenizer = require(ASSETS / "minimind-tokenizer" / "minimind2")
        out = tmp_path_factory.mktemp("llm") / "minimind-tiny-int8"
        from export.cli import main as export_main

        code = export_main(
            [str(checkpoint), "--out", str(out), "--quant", "int8", "--tokenizer", str(tokenizer)]
        )
        assert code == 0, "export of the tiny reference model failed"
        _exported["tiny"] = out
    return _exported["tiny"]


def write_config(directory: Path, text: str = "") -> Path:
    """A config.yaml for tests: short replies (the tiny model never stops early) plus `text`."""
    path = directory / "config.yaml"
    path.write_text("llm:\n  max_new_tokens: 16\n  threads: 1\n" + text, encoding="utf-8")
    return path


def load_mono16k(path: Path) -> np.ndarray:
    """float32 mono 16 kHz samples of a clip (the daemon's own resampler does the conversion)."""
    from assistant.audio.resample import resample, to_mono

    data, rate = sf.read(str(require(path)), dtype="float32", always_2d=True)
    return resample(to_mono(data), rate, 16000).astype(np.float32)


def write_wav(path: Path, *parts: np.ndarray) -> Path:
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)


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


def words(text: str) -> list[str]:
    return "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance / reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(word in it for word in needle)
