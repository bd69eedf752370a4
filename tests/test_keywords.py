"""Keywords files: plain phrases and sherpa lines, converted against the real KWS models' tokens.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.errors import ConfigError
from assistant.wake.keywords import format_keywords, load_keywords, load_tokens, parse_keywords


@pytest.fixture(scope="module")
def zh(assets: Path):
    return load_tokens(assets / "kws/zh-wenetspeech-3.3M-mobile/tokens.txt")


@pytest.fixture(scope="module")
def en(assets: Path):
    return load_tokens(assets / "kws/en-gigaspeech-3.3M-mobile/tokens.txt")


def token_lines(text, table):
    return [" ".join(k.tokens) for k in parse_keywords(text, table)]


def test_sandhi_variants_shuijiao_and_nihao(zh):
    assert token_lines("水饺", zh) == ["sh uǐ j iǎo", "sh uí j iǎo"]
    assert token_lines("你好", zh) == ["n ǐ h ǎo", "n í h ǎo"]
    variants = parse_keywords("你好问问", zh)
    assert {k.label for k in variants} == {"你好问问"}
    assert [" ".join(k.tokens) for k in variants] == ["n ǐ h ǎo w èn w èn", "n í h ǎo w èn w èn"]


def test_no_variants_without_consecutive_third_tones(zh):
    assert token_lines("小爱同学", zh) == ["x iǎo ài t óng x ué"]


def test_long_third_tone_run_gives_every_reading_last_syllable_kept(zh):
    lines = token_lines("小米小米", zh)
    assert len(lines) == 8 and len(set(lines)) == 8
    assert all(line.endswith("m ǐ") for line in lines)
    assert "x iáo m í x iáo m ǐ" in lines


def test_plain_phrase_matches_upstream_tokenization(zh, en, assets):
    upstream = (assets / "kws/zh-wenetspeech-3.3M-mobile/keywords.txt").read_text(encoding="utf-8")
    for line in upstream.splitlines():
        tokens, label = line.rsplit("@", 1)
        assert tokens.split() in [k.tokens for k in parse_keywords(label, zh)], label
    assert token_lines("FELLOW AMERICANS", en)[0] == "▁FE LL OW ▁AMERICA N S"
    assert token_lines("hello world", en)[0] == "▁HE LL O ▁WORLD"
    # the merge-replay variant covers what greedy longest match misses
    assert "▁GO S P EL" in token_lines("GOSPEL", en)
    assert "▁HE Y ▁S I RI" in token_lines("HEY SIRI", en)


def test_pretokenized_lines_and_suffixes(zh, en):
    [kw] = parse_keywords("x iǎo ài t óng x ué :2.0 #0.6 @小爱", zh)
    assert kw.tokens == ["x", "iǎo", "ài", "t", "óng", "x", "ué"]
    assert (kw.boost, kw.threshold, kw.label) == (2.0, 0.6, "小爱")
    [kw] = parse_keywords("▁HE Y ▁S I RI @HEY_SIRI", en)
    assert kw.tokens == ["▁HE", "Y", "▁S", "I", "RI"] and kw.label == "HEY_SIRI"
    kws = parse_keywords("HEY COMPUTER #0.3", en)
    assert kws[0].label == "HEY COMPUTER" and kws[0].threshold == 0.3 and kws[0].boost is None


def test_comments_and_blank_lines(zh):
    text = "# a comment\n\n#another\n   \n小爱同学 #0.3\n"
    kws = parse_keywords(text, zh)
    assert [k.line_no for k in kws] == [5]
    assert kws[0].threshold == 0.3


def test_format_is_sherpa_syntax_and_reparses(zh, en):
    kws = parse_keywords("你好 :1.5 #0.35", zh)
    text = format_keywords(kws)
    assert text == "n ǐ h ǎo :1.5 #0.35 @你好\nn í h ǎo :1.5 #0.35 @你好\n"
    again = parse_keywords(text, zh)
    assert [k.tokens for k in again] == [k.tokens for k in kws]
    # labels with spaces are written with '_' (sherpa-onnx splits on whitespace)
    assert format_keywords(parse_keywords("HEY COMPUTER", en)).endswith("@HEY_COMPUTER\n")


def test_unknown_character_names_file_line_and_character(tmp_path, en):
    path = tmp_path / "kw.txt"
    path.write_text("HELLO WORLD\n# fine\nHEY R2D2 @droid\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_keywords(path, en)
    message = str(err.value)
    assert f"{path}:3" in message and "HEY R2D2 @droid" in message and "'2'" in message


def test_unknown_token_names_line_and_token(zh):
    with pytest.raises(ConfigError) as err:
        parse_keywords("小爱同学\nx iǎo ài t óng x qq", zh, source="kw.txt")
    assert "kw.txt:2" in str(err.value) and "'qq'" in str(err.value)


def test_bad_suffix_order_and_bare_threshold_are_errors(zh):
    with pytest.raises(ConfigError, match="kw.txt:1"):
        parse_keywords("小爱 @label 同学", zh, source="kw.txt")
    with pytest.raises(ConfigError, match="no keyword"):
        parse_keywords("#0.3", zh, source="kw.txt")


def test_missing_and_empty_keywords_files(tmp_path, zh):
    with pytest.raises(ConfigError, match="not found"):
        load_keywords(tmp_path / "nope.txt", zh)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no keywords"):
        load_keywords(empty, zh)
