"""Fuzzing every input a user controls: keywords files, config.yaml, audio files, stdin PCM, training jsonl.

The property is the same everywhere: the input is accepted, or rejected with the documented clear error
(ConfigError, AudioError, ModelError; the training data's DataError, a ConfigError) -- never another
exception, never a hang. Each property runs a bounded number of examples so the file takes well under a
minute.

Why ~380 lines: one property per input a user controls, each with its own generator; kept together so
the bounded example counts (and CI's derandomize) are set in one place.
"""

from __future__ import annotations

import io
import json
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from assistant.audio.sources import FileSource, PcmStreamSource
from assistant.errors import AudioError, ConfigError
from assistant.settings import Settings, load_settings
from assistant.wake.keywords import TokenTable, load_tokens, parse_keywords
from speechdata.assets import JFK, KWS_EN, KWS_ZH
from speechdata.audio import load_clip, wav_bytes
from tests.conftest import ASSETS, require
from tests.support.fuzz import FUZZ, drain

# ------------------------------------------------------------------------------------------- keywords files


@pytest.fixture(scope="module")
def tables() -> dict[str, TokenTable]:
    return {
        "en": load_tokens(require(KWS_EN) / "tokens.txt"),
        "zh": load_tokens(require(KWS_ZH) / "tokens.txt"),
    }


def _tokens_of(table: TokenTable) -> list[str]:
    return sorted(table.symbols)


def _suffixes() -> st.SearchStrategy[str]:
    number = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-5, 5).map(str),
        st.text(string.digits + ".-e+", max_size=6),
    )
    label = st.text(max_size=12)
    parts = st.lists(
        st.one_of(
            number.map(lambda n: f" :{n}"), number.map(lambda n: f" #{n}"), label.map(lambda s: f" @{s}")
        ),
        max_size=4,
    )
    return parts.map("".join)


def _check_keywords(text: str, table: TokenTable) -> None:
    try:
        keywords = parse_keywords(text, table, source="fuzz.txt")
    except ConfigError as exc:
        assert "fuzz.txt" in str(exc)  # the message names the file (and the line)
        return
    for kw in keywords:
        assert kw.tokens and all(isinstance(t, str) and t for t in kw.tokens)


@pytest.mark.parametrize("lang", ["en", "zh"])
@FUZZ
@given(text=st.text(max_size=200))
def test_keywords_random_unicode(tables: dict[str, TokenTable], lang: str, text: str) -> None:
    _check_keywords(text, tables[lang])


@pytest.mark.parametrize("lang", ["en", "zh"])
@FUZZ
@given(data=st.data())
def test_keywords_token_lines_with_suffixes(tables: dict[str, TokenTable], lang: str, data: Any) -> None:
    table = tables[lang]
    vocab = _tokens_of(table)
    words = st.one_of(
        st.sampled_from(vocab) if vocab else st.just("A"),
        st.sampled_from(["HEY COMPUTER", "小爱同学", "你好", "FELLOW AMERICANS", "x", "▁", "#", ":", "@"]),
        st.text(alphabet=string.ascii_letters + "'- ", max_size=10),
    )
    lines = data.draw(st.lists(st.tuples(st.lists(words, min_size=0, max_size=5), _suffixes()), max_size=6))
    text = "\n".join(" ".join(body) + suffix for body, suffix in lines)
    _check_keywords(text, table)


# ---------------------------------------------------------------------------------------------- config.yaml

_KNOWN: dict[str, list[str]] = {
    "paths": ["models_dir"],
    "audio": ["input", "device", "sample_rate", "block_ms", "realtime", "ring_s"],
    "wake": [
        "keywords_file",
        "model",
        "model_dir",
        "keywords_score",
        "keywords_threshold",
        "num_threads",
        "gate",
    ],
    "asr": [
        "engine",
        "model",
        "model_dir",
        "decoding_method",
        "num_threads",
        "endpoint",
        "no_speech_timeout_s",
        "max_utterance_s",
    ],
    "llm": [
        "model",
        "model_dir",
        "threads",
        "system_prompt",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "max_new_tokens",
        "seed",
        "greedy",
        "max_context_tokens",
        "follow_up_window_s",
    ],
    "tts": ["engine", "output", "model_type", "model", "voice", "speed", "speaker_id", "mute_tail_s"],
    "logging": ["level", "json"],
    "service": ["watchdog"],
}
_SUB = {
    "gate": ["enabled", "kind", "pre_roll_s", "open_db", "close_db", "open_blocks", "hang_s"],
    "endpoint": ["rule1_min_trailing_silence", "rule2_min_trailing_silence", "rule3_min_utterance_length"],
}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["mic", "-", "kws-en", "energy", "silero", "streaming", "espeak", "none", "info", "~", ""]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _configs(draw: Any) -> Any:
    config: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from([*_KNOWN, "bogus"]), max_size=4, unique=True)):
        keys = _KNOWN.get(section, ["x"])
        body: dict[Any, Any] = {}
        for key in draw(st.lists(st.sampled_from([*keys, "unknown_key"]), max_size=4, unique=True)):
            if key in _SUB and draw(st.booleans()):
                sub = draw(st.lists(st.sampled_from(_SUB[key]), max_size=3, unique=True))
                body[key] = {k: draw(_values) for k in sub}
            else:
                body[key] = draw(_values)
        config[section] = draw(st.one_of(st.just(body), _values)) if draw(st.integers(0, 9)) == 0 else body
    return config if draw(st.integers(0, 9)) else draw(_values)


def _load_config_text(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            loaded = load_settings(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            return
        assert isinstance(loaded, Settings)


@FUZZ
@given(config=_configs())
def test_config_random_structures_for_known_keys(config: Any) -> None:
    try:
        text = yaml.safe_dump(config, allow_unicode=True)
    except yaml.YAMLError:  # e.g. a float key yaml cannot represent: not a file a user can write this way
        return
    _load_config_text(text)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_config_random_bytes_and_text(raw: bytes | str) -> None:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    _load_config_text(raw)


@FUZZ
@given(
    lines=st.lists(
        st.sampled_from(
            [
                "llm:",
                "  top_p: 2",
                "audio:",
                "  input: [1, 2]",
                "wake:",
                "  gate:",
                "    kind: silero",
                "  - a",
                "&a x",
                "*a",
                "!!python/object:os.system x",
                "  {",
                "\t",
                "asr: !!binary AAAA",
                "? [1]",
                ": x",
                "llm: {threads: 0}",
                "'",
                "%YAML 1.1",
                "---",
                "...",
                "<<: *a",
            ]
        ),
        max_size=8,
    )
)
def test_config_yaml_fragments(lines: list[str]) -> None:
    _load_config_text("\n".join(lines))


# ---------------------------------------------------------------------------------------- audio files / stdin


def _open_and_drain(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.wav"
        path.write_bytes(data)
        try:
            drain(FileSource(path))
        except AudioError as exc:
            assert str(path) in str(exc)


@pytest.fixture(scope="module")
def real_files() -> dict[str, bytes]:
    clip = load_clip(require(JFK))[:8000]
    return {
        "wav16": wav_bytes(clip),
        "wavfloat": wav_bytes(clip, subtype="FLOAT"),
        "flac": wav_bytes(clip, fmt="FLAC"),
        "shared": (require(ASSETS / "audio" / "en" / "picovoice-leopard-test.wav")).read_bytes()[:20000],
    }


@FUZZ
@given(data=st.binary(max_size=400))
def test_audio_file_random_bytes(data: bytes) -> None:
    _open_and_drain(data)


@FUZZ
@given(
    kind=st.sampled_from(["wav16", "wavfloat", "flac", "shared"]),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=6),
)
def test_audio_file_truncated_and_corrupted_headers(
    real_files: dict[str, bytes], kind: str, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(real_files[kind])
    for position, value in flips:  # corrupt the header region
        if position < len(data):
            data[position] = value
    truncated = bytes(data[:cut]) if cut < 200 else bytes(data)
    _open_and_drain(truncated)


@FUZZ
@given(data=st.binary(max_size=5000), rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]))
def test_stdin_pcm_odd_lengths_and_random_bytes(data: bytes, rate: int) -> None:
    total = drain(PcmStreamSource(io.BytesIO(data), pcm_rate=rate))
    expected = (len(data) // 2) * 16000 / rate
    assert abs(total - expected) <= 2 + 16000 / rate  # an odd trailing byte is dropped, never a crash


# -------------------------------------------------------------------------------------- training jsonl data


@pytest.fixture(scope="module")
def training_data() -> Any:
    data = pytest.importorskip("training.data")
    return data, data.load_tokenizer(require(ASSETS / "minimind-tokenizer" / "minimind2"))


_json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False), st.text(max_size=30)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", ""]),
            "content": st.one_of(st.text(max_size=40), _json_values),
        }
    ),
    max_size=4,
)
_records = st.one_of(
    _json_values,
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=60), _json_values)}),
    st.fixed_dictionaries({"conversations": st.one_of(_messages, _json_values)}),
    st.fixed_dictionaries(
        {"chosen": st.one_of(_messages, _json_values), "rejected": st.one_of(_messages, _json_values)}
    ),
)
_lines = st.one_of(_records.map(lambda r: json.dumps(r, ensure_ascii=False)), st.text(max_size=60))


@FUZZ
@given(lines=st.lists(_lines, max_size=5), stage=st.sampled_from(["pretrain", "sft", "dpo"]))
def test_training_jsonl_lines(training_data: Any, lines: list[str], stage: str) -> None:
    data, tokenizer = training_data
    encoder = {"pretrain": data.encode_pretrain, "sft": data.encode_sft, "dpo": data.encode_dpo}[stage]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text(
            "\n".join(line.replace("\n", " ") for line in lines), encoding="utf-8", errors="surrogatepass"
        )
        try:
            dataset = data.Dataset(path, encoder, tokenizer, max_length=64)
            for i in range(len(dataset)):
                item = dataset.get(i)
                assert item is not None and 0 < len(item.ids) <= 64
        except data.DataError as exc:
            assert str(path) in str(exc)
