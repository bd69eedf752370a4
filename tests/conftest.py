"""Every shared fixture, and the rules the tests share. Assets live in ../shared and are never copied into the repo.

- Data the tests need but the machine may lack: `require(path)` and `needs_tool(name)` fail under CI and skip
  elsewhere (one rule, here).
- Models made once per session: `tiny_llm` (an int8 export of the tiny reference MiniMind, the way a user
  exports), `tiny_dirs` (fp32 and a requantized int8 of the same weights), `tiny_fp32`, `tiny_int8`, `pack`
  (the conformance pack), `eos_model_dir`, `sense_voice_dir`. Builders in tests/support/models.py.
- The daemon on real models: `models` (per module) and `build_daemon` / `run_daemon`, the one way a test makes
  and runs a Daemon (assistant.pipeline builds it, as for `assistant run`).
- Clips, noise, mixing and WER are in the `speechdata` package (shared with bench/); running the CLI as a
  subprocess is in tests/support/cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
from collections.abc import AsyncIterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from speechdata.assets import ASSETS, JFK, KWS_EN, REFERENCE, REPO, TINY_CHECKPOINT, TOKENIZER_DIR, english_settings
from speechdata.audio import load_clip, silence, write_wav
from tests.support import models as built

__all__ = [
    "ASSETS", "REFERENCE", "REPO", "build_daemon", "event_names", "needs_tool", "require", "run_daemon", "under_ci",
]

DAEMON_TIMEOUT_S = 120  # bound on every whole daemon run (generous: the machine may be busy)


# --------------------------------------------------------------------------------- missing data and tools


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(message: str) -> None:
    """Fail loudly under CI (the data and tools must be there), skip elsewhere."""
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


def require(path: Path) -> Path:
    """Return `path` if it exists. Missing shared data fails loudly under CI and skips elsewhere."""
    if not path.exists():
        _missing(f"shared test data missing: {path} (tests expect ../shared beside the checkout)")
    return path


def needs_tool(name: str, install: str) -> str:
    """The path of program `name`; missing, it fails under CI and skips elsewhere. `install` says how to get it."""
    found = shutil.which(name)
    if not found:
        _missing(f"{name} not found: {install}")
    return str(found)


@pytest.fixture(scope="session")
def assets() -> Path:
    return require(ASSETS)


@pytest.fixture(scope="session")
def reference() -> Path:
    return require(REFERENCE)


# ------------------------------------------------------------------------------------- models, once a session


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of an int8 export of minimind2-dense-tiny-random.pth: gibberish replies, every real step."""
    checkpoint, tokenizer = require(TINY_CHECKPOINT), require(TOKENIZER_DIR)
    return built.export_tiny_int8(checkpoint, tokenizer, tmp_path_factory.mktemp("llm") / "minimind-tiny-int8")


@pytest.fixture(scope="session")
def tiny_dirs(reference: Path, assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"fp32": dir, "int8": dir}: the dense-tiny conformance weights exported both ways."""
    tokenizer = assets / "minimind-tokenizer" / "minimind2" / "tokenizer.json"
    return built.export_model_dirs(reference / built.TINY, tmp_path_factory.mktemp("mm-tiny"), tokenizer)


@pytest.fixture(scope="session")
def tiny_fp32(tiny_dirs: dict[str, Path]) -> Any:
    from assistant.llm.runtime import MiniMindOnnx

    return MiniMindOnnx(tiny_dirs["fp32"], threads=1)


@pytest.fixture(scope="session")
def tiny_int8(tiny_dirs: dict[str, Path]) -> Any:
    from assistant.llm.runtime import MiniMindOnnx

    # The blocks form, not auto: auto follows a timing taken at export, which a busy machine can tip either way,
    # and the dynamic form quantizes activations per call, so its logits depend on how a sequence is fed.
    return MiniMindOnnx(tiny_dirs["int8"], threads=1, weights="blocks")


@pytest.fixture(scope="session")
def pack(reference: Path) -> Any:
    import numpy as np

    return np.load(reference / built.TINY_REF)


@pytest.fixture(scope="session")
def eos_model_dir(tiny_dirs: dict[str, Path], pack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 tiny model that says eos as its 4th token after the chat1 prompt."""
    total = len(pack["chat1_ids"]) + 3
    return built.force_eos_after(tiny_dirs["fp32"], tmp_path_factory.mktemp("eos") / "model", total)


@pytest.fixture(scope="session")
def sense_voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built.build_sense_voice(tmp_path_factory.mktemp("sensevoice"))


# ----------------------------------------------------------------------------------- the daemon, in-process


@dataclasses.dataclass(frozen=True)
class Models:
    """Settings and the loaded components of a daemon (English KWS as wake word and ASR, the tiny LLM)."""

    settings: Any
    keywords: list[Any]
    wake: Any
    asr: Any
    chat: Any


def daemon_settings(keywords_file: Path, llm_dir: Path, **extra: Any) -> Any:
    """The settings of `models`, with `extra` dotted keys changed ({"llm.reply_timeout_s": 2.0})."""
    return english_settings(keywords_file, llm_dir, **{"wake.model_dir": require(KWS_EN), **extra})


@pytest.fixture(scope="module")
def keywords_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kw") / "keywords.txt"
    path.write_text("FELLOW AMERICANS\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(keywords_file: Path, tiny_llm: Path) -> Models:
    from assistant import pipeline

    settings = daemon_settings(keywords_file, tiny_llm)
    keywords = pipeline.load_keyword_list(settings)
    return Models(
        settings=settings,
        keywords=keywords,
        wake=pipeline.build_wake(settings, keywords),
        asr=pipeline.build_asr(settings),
        chat=pipeline.build_chat(settings),
    )


@pytest.fixture(scope="module")
def jfk_twice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    jfk = load_clip(require(JFK))
    return write_wav(tmp_path_factory.mktemp("audio") / "jfk-twice.wav", jfk, silence(2.5), jfk, silence(0.5))


@contextlib.contextmanager
def build_daemon(
    models: Models, *, settings: Any = None, live: bool = False, **parts: Any
) -> Iterator[tuple[Any, list[Any]]]:
    """(daemon, events): a Daemon over `models`, built by assistant.pipeline as `assistant run` builds it.

    `parts` replace any of wake, asr, chat, speech. The spotter and the chat are reset first; every event the
    daemon emits is appended to `events`; the executor is shut down on leaving the block.
    """
    from assistant import pipeline
    from assistant.daemon import make_executor

    components = pipeline.Pipeline(**{"wake": models.wake, "asr": models.asr, "chat": models.chat, "speech": None,
                                      **parts})
    components.wake.reset()
    components.chat.clear()
    events: list[Any] = []
    executor = make_executor()
    try:
        yield pipeline.build_daemon(
            settings or models.settings, components, emit=events.append, executor=executor, live=live
        ), events
    finally:
        executor.shutdown(wait=True)


def run_daemon(
    models: Models, audio: Path | AsyncIterable[Any], *, settings: Any = None, live: bool = False, **parts: Any
) -> tuple[list[Any], Any]:
    """(events, daemon) after a daemon from `build_daemon` has read a file (or async chunks) to its end."""
    from assistant.audio.sources import open_source

    with build_daemon(models, settings=settings, live=live, **parts) as (daemon, events):
        source = open_source(str(audio)) if isinstance(audio, Path) else audio
        asyncio.run(asyncio.wait_for(daemon.run(source), DAEMON_TIMEOUT_S))
    return events, daemon


def event_names(events: list[Any]) -> list[str]:
    """The events' names without partials, a state change as "state:NEW" (the shape of a run, for asserts)."""
    return [e.name if e.name != "state" else f"state:{e.state}" for e in events if e.name != "partial"]


# -------------------------------------------------------------------------------------------- pytest hooks


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
