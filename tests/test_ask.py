"""`assistant ask` end to end in a subprocess, on a real export of the conformance weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.errors import MODEL
from assistant.llm.tokenizer import Tokenizer
from assistant.settings import BUNDLED_DEMO, DEMO_MODEL, load_settings

REPO = Path(__file__).resolve().parents[1]


def ask(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "assistant", "ask", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_ask_json_streams_and_ends_with_reply(tiny_dirs, pack):
    result = ask("--json", "--greedy", "--max-new-tokens", "24", "--model-dir", str(tiny_dirs["fp32"]),
                 "中国最高的山是哪座？")  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("first_token") == 1
    assert kinds[-1] == "reply"
    assert set(kinds) == {"first_token", "token", "reply"}
    reply = events[-1]
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    expected = Tokenizer.from_dir(tiny_dirs["fp32"]).decode(pack["chat2_greedy"].tolist())
    assert reply["text"] == tokens == expected
    assert reply["tokens"] == 24
    assert reply["ttft_ms"] > 0
    assert reply["tokens_per_s"] > 0


def test_ask_plain_text_from_stdin(tiny_dirs):
    result = ask("--greedy", "--max-new-tokens", "8", "--model-dir", str(tiny_dirs["int8"]), "-",
                 stdin="What is the capital of France?\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    assert len(result.stdout.strip()) > 0


def test_ask_does_not_load_torch(tiny_dirs):
    code = (
        "import sys; from assistant.cli import main; "
        f"rc = main(['ask', '--greedy', '--max-new-tokens', '2', '--model-dir', {str(tiny_dirs['fp32'])!r}, "
        "'hi']); "
        "sys.exit(3 if 'torch' in sys.modules else rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr


def test_ask_missing_model_is_clear_error(tmp_path):
    result = ask("--model-dir", str(tmp_path / "nothing-here"), "你好")
    assert result.returncode == MODEL
    assert "assistant models fetch minimind2-small" in result.stderr
    assert "Traceback" not in result.stderr


def test_ask_bad_sampling_is_clear_error(tiny_dirs):
    result = ask("--top-p", "0", "--model-dir", str(tiny_dirs["fp32"]), "你好")
    assert result.returncode == 3
    assert "top_p" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_model_dir_falls_back_to_demo(tmp_path, monkeypatch):
    # One rule for run and ask (settings.llm_model_dir): the configured model, else a demo model in the models
    # folder, else the demo model shipped in the package; an explicit folder always wins.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSISTANT_MODELS_DIR", raising=False)
    configured, demo = tmp_path / "models" / "minimind", tmp_path / "models" / DEMO_MODEL
    assert load_settings(None).llm_model_dir() == BUNDLED_DEMO
    demo.mkdir(parents=True)
    (demo / "model.onnx").write_bytes(b"")
    assert load_settings(None).llm_model_dir() == demo
    configured.mkdir(parents=True)
    assert load_settings(None).llm_model_dir() == configured
    assert load_settings(None, {"llm.model_dir": "x"}).llm_model_dir() == tmp_path / "x"


def test_a_fresh_install_answers_with_the_shipped_demo_model(tmp_path):
    # No models folder, no config: the demo model in the package answers, and the log says how to get the real
    # one. The demo model is the recipe's output, committed with its report and sha256 (checked at load).
    report = json.loads((BUNDLED_DEMO / "demo_report.json").read_text(encoding="utf-8"))
    assert report["held_out"] > 0
    result = ask("--json", "--greedy", "--max-new-tokens", "8", "-v", "Who are you?", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout.splitlines()[-1])
    assert reply["event"] == "reply" and reply["intent"] is None and reply["tokens"] >= 1
    assert "demo model" in result.stderr and "assistant models fetch minimind2-small" in result.stderr


def test_ask_reads_the_llm_section_of_its_config(tiny_dirs, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  model_dir: {tiny_dirs['fp32']}\n  greedy: true\n  max_new_tokens: 5\n",
                      encoding="utf-8")
    result = ask("--json", "--config", str(config), "你好")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["tokens"] == 5
