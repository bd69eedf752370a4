"""config.yaml loading: defaults, validation errors that name the key, path resolution, CLI precedence."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from assistant import cli
from assistant.commands import run as daemon_cli
from assistant.errors import CONFIG, MODEL, ConfigError
from assistant.settings import BUNDLED_DEMO, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    daemon_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_repo_config_documents_exactly_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    from_file = load_settings(REPO / "config.yaml")
    assert from_file.config_path == (REPO / "config.yaml").resolve()
    assert dataclasses.replace(from_file, config_path=None) == load_settings(None)


def test_no_file_gives_defaults_with_paths_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None)
    assert settings.paths.models_dir == tmp_path.resolve() / "models"
    assert settings.wake_model_dir() == tmp_path.resolve() / "models" / "kws-en"
    # Nothing installed: the demo model shipped in the package answers (settings.llm_model_dir).
    assert settings.llm_model_dir() == BUNDLED_DEMO
    assert settings.asr.endpoint.rule2_min_trailing_silence == 1.2


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "wake:\nasr:\n  endpoint:\n"))
    assert settings.wake == dataclasses.replace(Settings().wake)
    assert settings.asr.endpoint == Settings().asr.endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wake:\n  keyword_file: k.txt\n", "wake.keyword_file: unknown setting"),
        ("colour: blue\n", "colour: unknown setting"),
        (
            "asr:\n  endpoint:\n    rule2_min_trailing_silence: abc\n",
            "asr.endpoint.rule2_min_trailing_silence: expected a number > 0, got 'abc'",
        ),
        (
            "asr:\n  endpoint:\n    rule1_min_trailing_silence: -1\n",
            "rule1_min_trailing_silence: expected a number > 0",
        ),
        (
            "wake:\n  keywords_threshold: 1.5\n",
            "wake.keywords_threshold: expected a number > 0 and <= 1, got 1.5",
        ),
        ("llm:\n  max_new_tokens: 2.5\n", "llm.max_new_tokens: expected an integer >= 1, got 2.5"),
        ("llm:\n  greedy: 1\n", "llm.greedy: expected true or false, got 1"),
        ("audio:\n  block_ms: true\n", "audio.block_ms: expected an integer"),
        ("tts:\n  engine: festival\n", "tts.engine: expected one of none, sherpa, espeak, piper, got 'festival'"),
        ("llm: [1, 2]\n", "llm: expected a mapping of settings"),
        ("wake:\n  gate:\n    kind: loud\n", "wake.gate.kind: expected one of energy, silero"),
        ("asr:\n  engine: whisper\n", "asr.engine: expected one of streaming, vad-offline, got 'whisper'"),
        ("asr:\n  offline:\n    kind: ctc\n", "asr.offline.kind: expected one of sense_voice, paraformer, whisper"),
        ("asr:\n  offline:\n    language: fr\n", "asr.offline.language: sense_voice knows auto, zh, en"),
        ("asr:\n  vad:\n    threshold: 0\n", "asr.vad.threshold: expected a number > 0 and <= 1, got 0.0"),
        ("- just\n- a list\n", "expected a mapping of sections at the top"),
    ],
)
def test_bad_values_name_file_and_dotted_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "audio:\n  input: mic\n  device: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: line \d+ invalid YAML"):
        load_settings(path)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _write(
        conf_dir,
        "paths:\n  models_dir: ../m\nwake:\n  keywords_file: kw.txt\naudio:\n  input: clip.wav\n"
        "tts:\n  output: out/speech.wav\n",
    )
    settings = load_settings(path)
    assert settings.paths.models_dir == (tmp_path / "m").resolve()
    assert settings.wake.keywords_file == (conf_dir / "kw.txt").resolve()
    assert settings.audio.input == (conf_dir / "clip.wav").resolve()
    assert settings.tts.output == (conf_dir / "out" / "speech.wav").resolve()
    # Special values stay what they are.
    assert load_settings(_write(conf_dir, "audio:\n  input: '-'\n")).audio.input == "-"
    assert load_settings(_write(conf_dir, "audio:\n  input: mic\n")).tts.output == "speaker"


def test_cli_flags_override_the_file_and_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    path = _write(
        conf_dir,
        "wake:\n  keywords_file: file-kw.txt\naudio:\n  input: mic\n  device: 2\n"
        "logging:\n  level: warning\n  json: false\n",
    )
    args = _cli_args(
        "--keywords",
        "cli-kw.txt",
        "--input",
        "talk.flac",
        "--json",
        "--device",
        "5",
        "--log-level",
        "debug",
        "--kws-model",
        "kws",
    )
    settings = load_settings(path, daemon_cli.overrides_from(args))
    assert settings.wake.keywords_file == tmp_path.resolve() / "cli-kw.txt"
    assert settings.audio.input == tmp_path.resolve() / "talk.flac"
    assert settings.audio.device == 5
    assert settings.logging.json is True
    assert settings.logging.level == "debug"
    assert settings.wake_model_dir() == tmp_path.resolve() / "kws"
    # Flags not given leave the file's values alone.
    unset = load_settings(path, daemon_cli.overrides_from(_cli_args()))
    assert unset.audio.device == 2
    assert unset.logging.level == "warning"
    assert unset.wake.keywords_file == (conf_dir / "file-kw.txt").resolve()


def test_models_dir_precedence_flag_file_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--model-dir > paths.models_dir in the file > ASSISTANT_MODELS_DIR > models/ beside the config file."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASSISTANT_MODELS_DIR", raising=False)
    unset = _write(conf_dir, "paths:\n  models_dir: null\n")
    assert load_settings(unset).paths.models_dir == conf_dir.resolve() / "models"
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", "env-models")  # relative: to the working directory
    assert load_settings(unset).paths.models_dir == tmp_path.resolve() / "env-models"
    assert load_settings(None).paths.models_dir == tmp_path.resolve() / "env-models"
    assert load_settings(_write(conf_dir, "wake:\n")).wake_model_dir() == tmp_path.resolve() / "env-models" / "kws-en"
    written = _write(conf_dir, "paths:\n  models_dir: file-models\n")
    assert load_settings(written).paths.models_dir == conf_dir.resolve() / "file-models"
    flag = daemon_cli.overrides_from(_cli_args("--model-dir", "flag-models"))
    assert load_settings(written, flag).paths.models_dir == tmp_path.resolve() / "flag-models"
    assert load_settings(unset, flag).paths.models_dir == tmp_path.resolve() / "flag-models"
    # The silero paths left null follow models_dir wherever it came from.
    silero = load_settings(_write(conf_dir, "wake:\n  gate:\n    kind: silero\n"))
    assert silero.gate_settings().silero_model == tmp_path.resolve() / "env-models" / "vad-silero" / "silero_vad.onnx"
    assert silero.vad_settings().model == silero.gate_settings().silero_model


def test_importing_settings_loads_no_model_runtime() -> None:
    """`assistant models list` reads the settings: sherpa_onnx and onnxruntime load only with a model."""
    import subprocess
    import sys

    code = "import sys, assistant.settings; print(sorted({'sherpa_onnx', 'onnxruntime'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_asr_falls_back_to_the_wake_model_until_asr_is_installed(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "wake:\n  model: kws-zh\nasr:\n  model: asr-zh\n"))
    assert settings.asr_model_dir() == tmp_path / "models" / "kws-zh"
    assert settings.asr_model_name() == "kws-zh"
    (tmp_path / "models" / "asr-zh").mkdir(parents=True)
    assert settings.asr_model_dir() == tmp_path / "models" / "asr-zh"
    assert settings.asr_model_name() == "asr-zh"


def test_config_error_exits_before_models_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "asr:\n  endpoint:\n    rule2_min_trailing_silence: abc\n")
    # The model folder does not exist: reaching the model stage would exit MODEL, not CONFIG.
    code = cli.main(
        ["--config", str(path), "--keywords", str(tmp_path / "kw.txt"), "--model-dir", str(tmp_path / "none")]
    )
    assert code == CONFIG
    err = capsys.readouterr().err
    assert "asr.endpoint.rule2_min_trailing_silence" in err
    assert "Traceback" not in err


def test_missing_keywords_setting_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "audio:\n  input: mic\n")
    assert cli.main(["run", "--config", str(path)]) == CONFIG
    assert "--keywords" in capsys.readouterr().err


def test_missing_wake_model_names_the_fetch_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kw.txt").write_text("HEY COMPUTER\n")
    code = cli.main(
        [
            "--keywords",
            str(tmp_path / "kw.txt"),
            "--model-dir",
            str(tmp_path / "models"),
            "--config",
            str(_write(tmp_path, "")),
        ]
    )
    assert code == MODEL
    assert "assistant models fetch kws-en" in capsys.readouterr().err
