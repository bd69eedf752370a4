"""`assistant --input FILE --json` end to end on real English speech, with the English KWS model as wake word
and as ASR, and an int8 MiniMind export answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.errors import AUDIO, MODEL
from speechdata.assets import JFK, JFK_TEXT, KWS_EN, LEOPARD
from speechdata.assets import WAKE_HEAD_S as JFK_HEAD_S  # "And so, my fellow Americans," ends before; "ask" after
from speechdata.audio import load_clip, silence, write_wav
from speechdata.wer import is_subsequence, wer, words
from tests.conftest import REPO, require
from tests.support.cli import of, parse_events, run_assistant, write_config


@pytest.fixture()
def workdir(tmp_path: Path, tiny_llm: Path) -> Path:
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    write_config(
        tmp_path,
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\nllm:\n  model_dir: {tiny_llm}\n",
    )
    return tmp_path


def _run(workdir: Path, audio: Path, *extra: str) -> tuple[int, list[dict], str]:
    return run_assistant(
        ["--config", str(workdir / "config.yaml"), "--input", str(audio), *extra], cwd=workdir
    )


def test_jfk_wake_transcript_reply_idle(workdir: Path) -> None:
    code, events, stderr = _run(workdir, require(JFK))
    assert code == 0, stderr
    wakes = of(events, "wake")
    assert [w["label"] for w in wakes] == ["FELLOW AMERICANS"]
    finals = of(events, "final")
    assert len(finals) == 1
    assert wer(JFK_TEXT, finals[0]["text"]) < 0.15, finals[0]["text"]
    assert of(events, "partial"), "partial results stream while listening"
    replies = of(events, "reply")
    assert len(replies) == 1 and replies[0]["text"]
    assert len(of(events, "first_token")) == 1
    states = [e["state"] for e in of(events, "state")]
    assert states == ["listening", "thinking", "idle"]
    assert not of(events, "error")
    # Events are in input order and the wake precedes everything about its utterance.
    times = [e["t"] for e in events]
    assert times == sorted(times)
    assert "latency: wake->endpoint" in stderr


def test_words_right_after_the_wake_word_reach_the_transcript(workdir: Path) -> None:
    head = load_clip(require(JFK))[: int(JFK_HEAD_S * 16000)]
    clip = write_wav(workdir / "jfk-head-leopard.wav", head, load_clip(require(LEOPARD)))
    code, events, stderr = _run(workdir, clip)
    assert code == 0, stderr
    assert len(of(events, "wake")) == 1
    (final,) = of(events, "final")
    # What the same recognizer makes of the leopard clip alone (QUILTOR for Quilter, MR for Mr.).
    alone = "MR QUILTOR IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
    assert is_subsequence(words(alone), words(final["text"])), final["text"]
    assert len(of(events, "reply")) == 1


def test_two_utterances_in_one_file_give_two_replies(workdir: Path) -> None:
    jfk = load_clip(require(JFK))
    clip = write_wav(workdir / "jfk-twice.wav", jfk, silence(2.5), jfk, silence(0.5))
    code, events, stderr = _run(workdir, clip)
    assert code == 0, stderr
    assert len(of(events, "wake")) == 2
    finals = of(events, "final")
    assert len(finals) == 2
    assert finals[0]["reason"] == "endpoint"
    for final in finals:
        assert wer(JFK_TEXT, final["text"]) < 0.15, final["text"]
    assert len(of(events, "reply")) == 2
    assert of(events, "state")[-1]["state"] == "idle"


def test_no_wake_word_no_reply(workdir: Path) -> None:
    code, events, stderr = _run(workdir, require(LEOPARD))
    assert code == 0, stderr
    assert not of(events, "wake")
    assert not of(events, "reply")
    assert not of(events, "final")


def test_unreadable_audio_exits_audio(workdir: Path) -> None:
    bad = workdir / "not-audio.wav"
    bad.write_bytes(b"RIFF but not really a wave file")
    code, events, stderr = _run(workdir, bad)
    assert code == AUDIO
    assert str(bad) in stderr and "Traceback" not in stderr
    code, _, stderr = _run(workdir, workdir / "missing.flac")
    assert code == AUDIO
    assert "missing.flac" in stderr


def test_missing_llm_exits_model_with_the_fix(workdir: Path) -> None:
    code, _, stderr = _run(workdir, require(JFK), "--llm-model", str(workdir / "no-llm"))
    assert code == MODEL
    assert "no-llm" in stderr and "assistant models fetch minimind2-small" in stderr
    assert "Traceback" not in stderr


def test_sigterm_mid_run_exits_zero(workdir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "assistant",
            "--config",
            str(workdir / "config.yaml"),
            "--input",
            str(JFK),
            "--realtime",
            "--json",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        lines = []
        # Real-time pacing: the wake comes ~3 s into the clip; stop while it is listening.
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if '"listening"' in line:
                break
        assert any('"wake"' in line for line in lines), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping" in err
    parse_events("".join(lines) + out)
