"""Hostile and careless input (issue 15, items 4, 7, 8, 9 and the input side of 11), one regression test each.

Keyword lines that used to expand exponentially, keyword suffixes out of range, WAV headers with absurd rates
or channel counts, config values that passed validation and then broke the daemon (NaN/inf, gate bounds,
seed, sample_rate, duplicate keys, alias bombs, huge files), and `assistant ask` questions that are not
valid UTF-8 or are blank. Real token tables, real files, real subprocesses of `python -m assistant`.

Why ~400 lines: one regression test per input hole of issue 15.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from assistant.audio.resample import MAX_RATE, MAX_WEIGHTS, MIN_RATE, Resampler, resample
from assistant.audio.sources import MAX_CHANNELS, FileSource, PcmStreamSource, open_source
from assistant.errors import AUDIO, CONFIG, AudioError, ConfigError
from assistant.llm.sampling import Sampler, sampling_from
from assistant.settings import MAX_CONFIG_BYTES, QUOTE_CHARS, load_settings
from assistant.wake.keywords import (
    MAX_BOOST,
    MAX_FILE_BYTES,
    MAX_KEYWORD_LINES,
    MAX_KEYWORD_TOKENS,
    MAX_LINE_CHARS,
    MAX_SANDHI_VARIANTS,
    load_keywords,
    load_tokens,
    parse_keywords,
)
from tests.conftest import ASSETS, REPO, require
from tests.support.inputs import FLOAT_KEYS, _nested, crafted_wav

KWS_EN = ASSETS / "kws" / "en-gigaspeech-3.3M-mobile"
KWS_ZH = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile"


def run_cli(args: list[str | bytes], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`python -m assistant ARGS` with the checkout on PYTHONPATH; bytes in, bytes out."""
    env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C.UTF-8")
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
        timeout=120, check=False,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ item 4: keyword blowup


@pytest.fixture(scope="module")
def zh():
    return load_tokens(require(KWS_ZH) / "tokens.txt")


@pytest.fixture(scope="module")
def en():
    return load_tokens(require(KWS_EN) / "tokens.txt")


def test_mixed_script_line_expands_lazily_in_bounded_memory(tmp_path: Path) -> None:
    """'小米A' * 23 built 2**23 combinations (34 s, then out of memory). Run under a 1.5 GiB address-space
    limit: the old code dies there, the lazy one keeps the first MAX_SANDHI_VARIANTS readings."""
    require(KWS_ZH)
    code = f"""
import resource, sys
from assistant.wake.keywords import load_tokens, parse_keywords
table = load_tokens({str(KWS_ZH / "tokens.txt")!r})
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
kws = parse_keywords("小米A" * 23, table)
print(len(kws), len(set(tuple(k.tokens) for k in kws)), kws[0].tokens[:5])
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split(maxsplit=2)[:2] == [str(MAX_SANDHI_VARIANTS)] * 2
    # the written reading first, as for a short line
    assert "['x', 'iǎo', 'm', 'ǐ', 'A']" in result.stdout


def test_long_third_tone_run_keeps_the_first_variants_in_order(zh) -> None:
    # 小米 x 8: 15 flexible syllables, 2**15 readings; the first 16 are the ones the eager code kept
    lines = [" ".join(k.tokens) for k in parse_keywords("小米" * 8, zh)]
    assert len(lines) == MAX_SANDHI_VARIANTS == len(set(lines))
    assert lines[0] == " ".join(["x iǎo m ǐ"] * 8)
    assert all(line.endswith("m ǐ") for line in lines)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("小爱同学" * 60, f"240 characters, more than {MAX_LINE_CHARS}"),
        ("小米" * 40, f"160 tokens, more than {MAX_KEYWORD_TOKENS}"),
        ("小米A" * 28, f"140 tokens, more than {MAX_KEYWORD_TOKENS}"),
    ],
)
def test_overlong_lines_are_refused_naming_the_line(zh, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_keywords(f"小爱同学\n{line}\n", zh, source="kw.txt")
    message = str(err.value)
    assert message.startswith("kw.txt:2: ") and expected in message
    assert len(message) < 300  # the line is quoted cut, not whole


def test_too_many_lines_and_too_big_a_file(tmp_path: Path, en) -> None:
    text = "HEY COMPUTER\n" * (MAX_KEYWORD_LINES + 1)
    with pytest.raises(ConfigError, match=f"kw.txt:{MAX_KEYWORD_LINES + 1}: more than {MAX_KEYWORD_LINES}"):
        parse_keywords(text, en, source="kw.txt")
    assert len(parse_keywords("# c\n" * 1000 + "HEY COMPUTER\n" * MAX_KEYWORD_LINES, en)) >= MAX_KEYWORD_LINES
    big = tmp_path / "big.txt"
    big.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=f"{big}: keywords file larger than {MAX_FILE_BYTES} bytes"):
        load_keywords(big, en)


# ------------------------------------------------------------------------------ item 9: suffixes range-checked


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("#5", "threshold suffix '#5' out of range"),
        ("#0", "threshold suffix '#0' out of range"),
        ("#-1", "threshold suffix '#-1' out of range"),
        ("#1", "threshold suffix '#1' out of range"),
        ("#1e400", "threshold suffix '#1e400' out of range"),
        ("#abc", "threshold suffix '#abc' is not a number"),
        (":-5", "boost suffix ':-5' out of range"),
        (":0", "boost suffix ':0' out of range"),
        (":1e400", "boost suffix ':1e400' out of range"),
        (f":{MAX_BOOST * 2:g}", f"boost suffix ':{MAX_BOOST * 2:g}' out of range"),
        (":abc", "boost suffix ':abc' is not a number"),
        (":nan", "boost suffix ':nan' is not a number"),
    ],
)
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_bad_suffixes_name_line_and_suffix(request, lang: str, suffix: str, expected: str) -> None:
    table = request.getfixturevalue(lang)
    phrase = "小爱同学" if lang == "zh" else "HEY COMPUTER"
    with pytest.raises(ConfigError) as err:
        parse_keywords(f"{phrase}\n{phrase} {suffix} @x\n", table, source="kw.txt")
    message = str(err.value)
    assert message.startswith("kw.txt:2: ") and expected in message, message


def test_suffixes_at_their_limits_are_accepted(en) -> None:
    [kw] = parse_keywords(f"HEY COMPUTER :{MAX_BOOST:g} #0.99", en)
    assert (kw.boost, kw.threshold) == (MAX_BOOST, 0.99)
    [kw] = parse_keywords("HEY COMPUTER :0.01 #1e-3", en)
    assert (kw.boost, kw.threshold) == (0.01, 0.001)


# --------------------------------------------------------------------------------------- item 7: WAV headers


def drain(source) -> int:
    async def read() -> int:
        n = 0
        async for chunk in source:
            assert np.all(np.isfinite(chunk.samples))
            n += len(chunk.samples)
        return n

    return asyncio.run(asyncio.wait_for(read(), 60))


@pytest.mark.parametrize(
    ("rate", "channels", "field"),
    [
        (1, 1, "sample rate 1 Hz"),
        (0x7FFFFFFF, 1, "sample rate 2147483647 Hz"),
        (MIN_RATE - 1, 1, f"sample rate {MIN_RATE - 1} Hz"),
        (MAX_RATE + 1, 1, f"sample rate {MAX_RATE + 1} Hz"),
        (16000, MAX_CHANNELS + 1, f"channel count {MAX_CHANNELS + 1}"),
        (16000, 1000, "channel count 1000"),
    ],
)
def test_absurd_header_fields_are_refused_naming_file_and_field(
    tmp_path: Path, rate: int, channels: int, field: str
) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(crafted_wav(rate, channels, frames=16))
    with pytest.raises(AudioError) as err:
        open_source(str(path))
    message = str(err.value)
    assert str(path) in message and field in message and "out of range" in message, message


@pytest.mark.parametrize(("rate", "channels"), [(MIN_RATE, 1), (MAX_RATE, 2), (44101, 1), (16000, MAX_CHANNELS)])
def test_header_fields_at_the_limits_play(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "edge.wav"
    frames = rate // 2  # half a second
    path.write_bytes(crafted_wav(rate, channels, frames=frames))
    total = drain(open_source(str(path)))
    assert abs(total - 8000) <= 2


@pytest.mark.parametrize("rate", [1, 0x7FFFFFFF])
def test_bad_wav_through_the_cli_exits_5_without_traceback(tmp_path: Path, rate: int) -> None:
    require(KWS_EN)
    (tmp_path / "keywords.txt").write_text("HEY COMPUTER\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n", encoding="utf-8"
    )
    wav = tmp_path / "bad.wav"
    wav.write_bytes(crafted_wav(rate, 1))
    result = run_cli(["--config", str(tmp_path / "config.yaml"), "--input", str(wav), "--json"], cwd=tmp_path)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == AUDIO, stderr
    assert "Traceback" not in stderr
    assert str(wav) in stderr and f"sample rate {rate} Hz" in stderr


def test_resampler_refuses_bogus_rates_and_stays_small_for_odd_ones() -> None:
    for rate in (0, 1, MIN_RATE - 1, MAX_RATE + 1, 0x7FFFFFFF):
        with pytest.raises(AudioError, match=f"input sample rate {rate} Hz out of range"):
            Resampler(rate, 16000)
    with pytest.raises(AudioError, match="PCM rate 1 Hz out of range"):
        PcmStreamSource(None, pcm_rate=1)
    # 16000/44101 has 16000 phases and 383999 Hz ~400 taps a side: neither may hold a table that grows with the
    # ratio (0x7fffffff Hz once asked for 539 GiB). tracemalloc sees numpy's buffers.
    x = np.random.default_rng(1).standard_normal(MAX_RATE).astype(np.float32)
    for rate in (44101, MAX_RATE - 1):
        tracemalloc.start()
        try:
            resampler = Resampler(rate, 16000)
            resampler.process(x[:rate], final=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 << 20, (rate, peak)
        assert resampler._weights.size <= MAX_WEIGHTS


@pytest.mark.parametrize("rate", [44101, MAX_RATE - 1, MIN_RATE + 1])
def test_odd_ratios_on_an_interpolated_phase_grid_keep_a_tone(rate: int) -> None:
    # gcd(rate, 16000) = 1: 16000 phases, more than the table holds, so weights are interpolated on a grid
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), rate)
    assert abs(len(y) - 16000) <= 1
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    assert np.abs(y[500:-500] - ref[500:-500]).max() < 1e-3
    streamed = Resampler(rate, 16000)
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    step = rate // 10
    pieces = [streamed.process(x[i : i + step], final=i + step >= len(x)) for i in range(0, len(x), step)]
    assert np.allclose(np.concatenate(pieces), y, atol=1e-6)


def test_file_source_reads_many_channels_in_bounded_blocks(tmp_path: Path) -> None:
    path = tmp_path / "wide.wav"
    path.write_bytes(crafted_wav(MAX_RATE, MAX_CHANNELS, frames=MAX_RATE // 4))
    source = FileSource(path)
    assert source.channels == MAX_CHANNELS
    assert abs(drain(source) - 4000) <= 2


# ----------------------------------------------------------------------------------------- item 8: config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_float_keys_include_the_gate_and_ring() -> None:
    assert {"wake.gate.open_db", "wake.gate.close_db", "wake.gate.hang_s", "wake.gate.pre_roll_s",
            "audio.ring_s", "llm.temperature"} <= set(FLOAT_KEYS)  # fmt: skip


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "1.0e+400"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused_naming_the_key(tmp_path: Path, key: str, value: str) -> None:
    path = _write(tmp_path, _nested(key, value))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert f"{path}: {key}: expected a finite number" in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wake:\n  gate:\n    open_db: 0\n", "wake.gate.open_db: expected a number > 0 and <= 60, got 0.0"),
        ("wake:\n  gate:\n    open_db: -5\n", "wake.gate.open_db: expected a number > 0"),
        ("wake:\n  gate:\n    close_db: -1\n", "wake.gate.close_db: expected a number >= 0"),
        ("wake:\n  gate:\n    open_db: 5\n    close_db: 6\n", "wake.gate.close_db: must be below wake.gate.open_db"),
        ("wake:\n  gate:\n    open_db: 5\n    close_db: 5\n", "wake.gate.close_db: must be below wake.gate.open_db"),
        ("wake:\n  gate:\n    hang_s: 0\n", "wake.gate.hang_s: expected a number > 0 and <= 60"),
        ("wake:\n  gate:\n    hang_s: 1e9\n", "wake.gate.hang_s: expected a number > 0 and <= 60"),
        ("wake:\n  gate:\n    pre_roll_s: 3600\n", "wake.gate.pre_roll_s: expected a number >= 0 and <= 10"),
        ("wake:\n  gate:\n    open_blocks: 0\n", "wake.gate.open_blocks: expected an integer >= 1"),
        ("wake:\n  gate:\n    silero_threshold: 1\n", "wake.gate.silero_threshold: expected a number > 0 and < 1"),
        ("wake:\n  gate:\n    min_floor_dbfs: 10\n", "wake.gate.min_floor_dbfs: expected a number >= -200 and <= 0"),
        ("audio:\n  ring_s: 1e6\n", "audio.ring_s: expected a number > 0 and <= 600"),
        ("llm:\n  seed: -1\n", "llm.seed: expected an integer >= 0 and < 4294967296, got -1"),
        ("llm:\n  seed: 4294967296\n", "llm.seed: expected an integer >= 0 and < 4294967296"),
        ("audio:\n  sample_rate: 8000\n", "audio.sample_rate: only 16000 is supported"),
        ("llm:\n  seed: " + "7" * 5000 + "\n", "line 2 invalid YAML: integer 777"),
        ("a: " + "[" * 50000 + "\n", "line 1 invalid YAML: nested deeper than 32 levels"),
        ("".join(" " * i + f"k{i}:\n" for i in range(40)), "invalid YAML: nested deeper than 32 levels"),
    ],
)
def test_values_that_broke_the_daemon_are_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_gate_and_seed_limits_themselves_load_and_the_seed_samples(tmp_path: Path) -> None:
    path = _write(tmp_path, "wake:\n  gate:\n    open_db: 60\n    close_db: 0\n    hang_s: 60\n    pre_roll_s: 0\n"
                            "llm:\n  seed: 4294967295\naudio:\n  sample_rate: 16000\n  ring_s: 600\n")  # fmt: skip
    settings = load_settings(path)
    assert (settings.wake.gate.open_db, settings.wake.gate.close_db, settings.llm.seed) == (60.0, 0.0, 2**32 - 1)
    sampler = Sampler(sampling_from(settings.llm), vocab_size=8)
    assert 0 <= sampler(np.zeros(8, dtype=np.float32)) < 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "wake:\n  gate:\n    open_db: 10\n    open_db: 12\n",
            "line 4 invalid YAML: duplicate key 'open_db' (first on line 3)",
        ),
        ("llm:\n  seed: 1\nwake: {}\nllm:\n  seed: 2\n", "line 4 invalid YAML: duplicate key 'llm' (first on line 1)"),
        ("llm: {top_k: 1, top_k: 2}\n", "line 1 invalid YAML: duplicate key 'top_k'"),
    ],
)
def test_duplicate_keys_are_errors_naming_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert expected in str(err.value)


def test_alias_bomb_is_refused_with_a_short_message(tmp_path: Path) -> None:
    levels = ["a0: &a0 " + "'" + "lol" * 100 + "'"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = _write(tmp_path, "\n".join(levels) + "\nllm:\n  system_prompt: *a8\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "line 2 invalid YAML: alias *a0 is not allowed" in message and len(message) < 400


def test_error_messages_quote_at_most_a_bounded_part_of_a_value(tmp_path: Path) -> None:
    for text in (f"llm:\n  temperature: '{'x' * 500_000}'\n", f"llm:\n  top_p: [{', '.join(['1'] * 100_000)}]\n",
                 f"llm:\n  seed: {'9' * 4000}\n", f"llm: !!python/object:{'a' * 100_000} x\n"):  # fmt: skip
        path = _write(tmp_path, text)
        with pytest.raises(ConfigError) as err:
            load_settings(path)
        assert len(str(err.value)) < len(str(path)) + QUOTE_CHARS + 120, str(err.value)[:500]


def test_config_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = _write(tmp_path, "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=f"config file larger than {MAX_CONFIG_BYTES} bytes"):
        load_settings(path)


def test_sample_rate_8000_through_the_cli_is_a_config_error(tmp_path: Path) -> None:
    wav = tmp_path / "ok.wav"
    wav.write_bytes(crafted_wav(16000, 1))
    _write(tmp_path, "audio:\n  sample_rate: 8000\n")
    result = run_cli(["--config", str(tmp_path / "config.yaml"), "--input", str(wav)], cwd=tmp_path)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == CONFIG, stderr
    assert "audio.sample_rate: only 16000 is supported" in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------------------- item 11: the ask question


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        ([b"caf\xe9?"], None, "the question argument is not valid UTF-8: byte 0xe9 at character 3"),
        (["-"], b"what is \xff\xfe?", "the question on stdin is not valid UTF-8: byte 0xff at offset 8"),
        (["   \t "], None, "empty question (argument is blank)"),
        (["-"], b" \n\t\n", "empty question (stdin is blank)"),
        (["-"], b"", "empty question (stdin is blank)"),
        (["-"], b"why? " * 300_000, "the question on stdin is longer than 1048576 bytes"),
        (["--seed", "-1", "hello"], None, "llm.seed: expected an integer >= 0"),
        (["--temperature", "nan", "hello"], None, "llm.temperature: expected a finite number"),
    ],
)
def test_ask_refuses_bad_questions_with_exit_3(tmp_path: Path, args: list, stdin: bytes | None, expected: str) -> None:
    result = run_cli(["ask", *args], cwd=tmp_path, stdin=stdin)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == CONFIG, stderr
    assert expected in stderr and "Traceback" not in stderr
