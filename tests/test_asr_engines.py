"""asr.engine switched by config alone: `python -m assistant --config CFG --input FILE --json` on the real JFK clip
with the streaming engine and with vad-offline (silero VAD + a SenseVoice-shaped model built by
tests/support/models.py: random weights, garbage text, the real loading and decoding path); the silero
paths' defaults under paths.models_dir; a bad VAD model path is a clear MODEL error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assistant import pipeline
from assistant.asr.vad_offline import VadOfflineASR, find_offline_model
from assistant.errors import MODEL, ModelError
from assistant.settings import VadSettings, load_settings
from assistant.wake.gate import GatedWakeWord, SileroGate
from speechdata.assets import JFK, KWS_EN, SILERO
from speechdata.audio import load_clip
from tests.conftest import require
from tests.support.cli import of, run_assistant


def _config(directory: Path, llm_dir: Path, sense_voice: Path, engine: str, vad_model: Path | None) -> Path:
    """A complete config.yaml: only `asr.engine` (and the VAD path under test) differ between runs."""
    (directory / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    vad = "null" if vad_model is None else str(vad_model)
    text = f"""\
paths:
  models_dir: {directory / "models"}
wake:
  keywords_file: keywords.txt
  model_dir: {require(KWS_EN)}
asr:
  engine: {engine}
  model_dir: {KWS_EN}
  offline:
    model_dir: {sense_voice}
  vad:
    model: {vad}
llm:
  model_dir: {llm_dir}
  max_new_tokens: 16
  threads: 1
"""
    path = directory / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(config: Path) -> tuple[int, list[dict[str, Any]], str]:
    return run_assistant(["--config", str(config), "--input", str(require(JFK))], cwd=config.parent)


def _answered_and_idle(events: list[dict[str, Any]]) -> None:
    """After the final transcript: a reply, or a clean 'empty transcript' error; then back to idle."""
    final_at = events.index(of(events, "final")[0])
    after = events[final_at + 1 :]
    replied = of(after, "reply")
    empty = [e for e in of(after, "error") if e["stage"] == "asr" and "empty transcript" in e["message"]]
    assert replied or empty, after
    states = [e["state"] for e in of(after, "state")]
    assert states and states[-1] == "idle", states


def test_engine_switch_by_config_only(tmp_path: Path, tiny_llm: Path, sense_voice_dir: Path) -> None:
    silero = require(SILERO)
    streaming_dir = tmp_path / "streaming"
    offline_dir = tmp_path / "offline"
    streaming_dir.mkdir()
    offline_dir.mkdir()

    code, events, stderr = _run(_config(streaming_dir, tiny_llm, sense_voice_dir, "streaming", silero))
    assert code == 0, stderr
    assert [e["label"] for e in of(events, "wake")] == ["FELLOW AMERICANS"]
    assert of(events, "partial"), "the streaming engine reports partial text"
    finals = of(events, "final")
    assert len(finals) == 1
    assert "COUNTRY" in finals[0]["text"]  # the KWS transducer as ASR is close on read speech
    _answered_and_idle(events)

    code, events, stderr = _run(_config(offline_dir, tiny_llm, sense_voice_dir, "vad-offline", silero))
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert [e["label"] for e in of(events, "wake")] == ["FELLOW AMERICANS"]
    finals = of(events, "final")
    assert len(finals) == 1, finals  # one wake, one utterance: the first VAD segment after it
    assert finals[0]["reason"] == "endpoint"
    # The keyword's own tail (speech until ~2.4 s, heard from 0.3 s before its estimated end, 2.2 s) is not
    # the utterance: "ask not" (VAD segment 3.26-4.49 s) is, closed by 0.5 s of silence.
    assert 4.5 <= finals[0]["t"] <= 5.5, finals
    # Partial text from the open segment (first_partial_s: 1.0) arrives before the endpoint.
    partials = of(events, "partial")
    assert partials and partials[0]["t"] < finals[0]["t"], partials
    assert "vad-offline" in stderr and "segment" in stderr  # the engine that ran says so in the log
    _answered_and_idle(events)


def test_bad_vad_model_path_is_a_model_error(tmp_path: Path, tiny_llm: Path, sense_voice_dir: Path) -> None:
    missing = tmp_path / "nowhere" / "silero_vad.onnx"
    code, events, stderr = _run(_config(tmp_path, tiny_llm, sense_voice_dir, "vad-offline", missing))
    assert code == MODEL, stderr
    assert str(missing) in stderr
    assert "assistant models fetch vad-silero" in stderr
    assert "Traceback" not in stderr
    assert not of(events, "wake")


def test_vad_model_defaults_to_models_dir(tmp_path: Path, sense_voice_dir: Path) -> None:
    """asr.vad.model null: <models_dir>/vad-silero/silero_vad.onnx, named with the fetch command if absent."""
    settings = load_settings(
        _config(tmp_path, tmp_path / "llm", sense_voice_dir, "vad-offline", vad_model=None)
    )
    expected = tmp_path / "models" / "vad-silero" / "silero_vad.onnx"
    assert settings.vad_settings().model == expected
    assert settings.vad_settings().max_speech_s == settings.asr.max_utterance_s
    with pytest.raises(ModelError, match=r"vad-silero/silero_vad\.onnx.*models fetch vad-silero"):
        pipeline.build_asr(settings)
    expected.parent.mkdir(parents=True)
    expected.symlink_to(require(SILERO))
    asr = pipeline.build_asr(settings)
    assert isinstance(asr, VadOfflineASR)


def test_silero_gate_finds_the_installed_model(tmp_path: Path) -> None:
    """wake.gate.kind silero with silero_model null uses <models_dir>/vad-silero/silero_vad.onnx."""
    models = tmp_path / "models"
    (models / "vad-silero").mkdir(parents=True)
    (models / "vad-silero" / "silero_vad.onnx").symlink_to(require(SILERO))
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"paths:\n  models_dir: models\nwake:\n  keywords_file: keywords.txt\n  model_dir: {require(KWS_EN)}\n"
        "  gate:\n    kind: silero\n    silero_model: null\n",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert settings.gate_settings().silero_model == models / "vad-silero" / "silero_vad.onnx"
    wake = pipeline.build_wake(settings, pipeline.load_keyword_list(settings))
    assert isinstance(wake, GatedWakeWord)
    assert isinstance(wake.gate, SileroGate)


def _endpoint_and_partials(asr: Any, audio: Any) -> tuple[float | None, list[float]]:
    """Feed 100 ms chunks: (seconds fed when the endpoint came, seconds fed at each changed partial)."""
    asr.start()
    partials = []
    for i in range(0, len(audio), 1600):
        update = asr.accept(audio[i : i + 1600])
        fed = (i + 1600) / 16000
        if update.endpoint:
            return fed, partials
        if update.changed:
            partials.append(fed)
    return None, partials


def test_keyword_tail_dropped_and_partials_double(sense_voice_dir: Path) -> None:
    """On JFK from 0.3 s before the keyword's estimated end (1.9 s), as the daemon feeds it."""
    audio = load_clip(require(JFK))[int(1.9 * 16000) :]
    files = find_offline_model(sense_voice_dir)
    vad = VadSettings(model=require(SILERO), min_silence_s=0.5)
    # Without the rule the keyword's last syllable (speech from 0 s to ~0.5 s) is the whole utterance.
    endpoint, _ = _endpoint_and_partials(VadOfflineASR(files, vad), audio)
    assert endpoint is not None and endpoint < 1.5
    asr = VadOfflineASR(files, vad, keyword_tail_s=0.8, first_partial_s=0.4)
    endpoint, partials = _endpoint_and_partials(asr, audio)
    # "ask not" (3.26-4.49 s in the clip) + 0.5 s of silence.
    assert endpoint is not None and 2.9 <= endpoint <= 3.4, endpoint
    # A 1.2 s segment: partial decodes at >= 0.4 s and >= 0.8 s of speech, not one per chunk.
    assert 1 <= len(partials) <= 2, partials
    assert all(p < endpoint for p in partials)
