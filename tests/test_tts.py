"""Speech out: sentence splitting of streamed text, espeak-ng and sherpa voices, TTS failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from assistant.errors import ConfigError, ModelError
from assistant.reply.sinks import SentenceSplitter, Speech, split_sentences
from assistant.reply.tts import EspeakTts, SherpaTts, WavFileOutput, make_synthesizer
from assistant.settings import TtsSettings
from speechdata.assets import AUDIO, KWS_EN
from tests.conftest import needs_tool, require
from tests.support.cli import of, run_assistant, write_config


def _espeak() -> str:
    return needs_tool("espeak-ng", "Debian: apt-get install -y espeak-ng")


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("It costs 3.14 dollars. Cheap.", ["It costs 3.14 dollars.", "Cheap."]),
        ("你好。今天天气怎么样？很好！", ["你好。", "今天天气怎么样？", "很好！"]),
        ("line one\nline two", ["line one", "line two"]),
        ("no end mark", ["no end mark"]),
        ("... !!! 。", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_streamed_pieces_split_like_the_whole_text() -> None:
    text = "First one. Second, with 2.5 percent! 第三句。Last words"
    splitter = SentenceSplitter()
    streamed: list[str] = []
    for ch in text:  # the worst case: one character per piece
        streamed += splitter.feed(ch)
    # A sentence is released as soon as it is complete, before the rest of the text exists.
    assert streamed == ["First one.", "Second, with 2.5 percent!", "第三句。"]
    assert splitter.flush() == "Last words"
    assert streamed + ["Last words"] == split_sentences(text)


def test_espeak_synthesizes_to_a_wav_file(tmp_path: Path) -> None:
    program = _espeak()
    synthesizer = EspeakTts(TtsSettings(engine="espeak", voice="en", speed=1.2), program=program)
    speech = Speech(synthesizer, WavFileOutput(tmp_path / "out.wav"))
    seconds = speech.speak("Ask not what your country can do for you.")
    seconds += speech.speak("Ask what you can do for your country.")
    speech.close()
    audio, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert 1.0 < seconds < 10.0
    assert abs(len(audio) / rate - seconds) < 0.01
    assert float(abs(audio).max()) > 0.05  # speech, not silence


def test_missing_espeak_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ModelError, match="espeak-ng"):
        make_synthesizer(TtsSettings(engine="espeak"))


def test_sherpa_voice_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tts.model: required"):
        SherpaTts(TtsSettings(engine="sherpa"))
    with pytest.raises(ModelError, match=r"tts\.model: .*missing\.onnx not found"):
        SherpaTts(TtsSettings(engine="sherpa", model=tmp_path / "missing.onnx", tokens=tmp_path / "t.txt"))
    assert make_synthesizer(TtsSettings(engine="none")) is None


@pytest.fixture()
def workdir(tmp_path: Path, tiny_llm: Path) -> Path:
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    return tmp_path


def _config(workdir: Path, tiny_llm: Path, tts: str) -> Path:
    return write_config(
        workdir,
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\nllm:\n  model_dir: {tiny_llm}\n{tts}",
    )


def test_daemon_speaks_the_reply(workdir: Path, tiny_llm: Path) -> None:
    _espeak()
    config = _config(workdir, tiny_llm, "tts:\n  engine: espeak\n  output: speech.wav\n")
    code, events, stderr = run_assistant(
        ["--config", str(config), "--input", str(require(AUDIO / "en" / "whisper-jfk.flac"))], cwd=workdir
    )
    assert code == 0, stderr
    assert [e["state"] for e in of(events, "state")] == ["listening", "thinking", "speaking", "idle"]
    assert len(of(events, "reply")) == 1
    assert not of(events, "error")
    audio, rate = sf.read(str(workdir / "speech.wav"), dtype="float32")
    assert len(audio) / rate > 0.3


def test_tts_failure_is_logged_and_the_reply_still_printed(workdir: Path, tiny_llm: Path) -> None:
    # Speech that cannot be written: the output path is a folder, so every sentence fails to play.
    _espeak()
    (workdir / "speech.wav").mkdir()
    config = _config(workdir, tiny_llm, "tts:\n  engine: espeak\n  output: speech.wav\n")
    code, events, stderr = run_assistant(
        ["--config", str(config), "--input", str(require(AUDIO / "en" / "whisper-jfk.flac"))], cwd=workdir
    )
    assert code == 0, stderr
    errors = of(events, "error")
    assert [e["stage"] for e in errors] == ["tts"]
    assert len(of(events, "reply")) == 1
    assert of(events, "state")[-1]["state"] == "idle"
    assert "tts failed" in stderr
