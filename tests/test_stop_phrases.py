"""wake.stop_phrases: defaults per wake model language, errors naming the item, stop labels kept apart."""

from __future__ import annotations

import pytest

from assistant.errors import ConfigError
from assistant.models.files import find_transducer
from assistant.settings import load_settings
from assistant.wake.keywords import load_tokens, parse_keywords, stop_phrase_keywords
from assistant.wake.spotter import WakeWord
from speechdata.assets import KWS_EN, KWS_ZH
from tests.conftest import require


def table(model_dir):
    files = find_transducer(require(model_dir), "kws")
    return files, load_tokens(files.tokens, files.bpe_model)


def test_defaults_follow_the_model_language():
    _, en = table(KWS_EN)
    phrases = list(dict.fromkeys(k.phrase for k in stop_phrase_keywords(None, en)))  # spelling variants: one
    assert phrases == ["STOP", "STOP TALKING", "NEVER MIND"]
    _, zh = table(KWS_ZH)
    phrases = {k.phrase for k in stop_phrase_keywords(None, zh)}
    assert phrases == {"停下", "停一下", "别说了"}
    assert stop_phrase_keywords((), en) == []


def test_a_phrase_the_model_cannot_spell_names_the_item():
    _, en = table(KWS_EN)
    with pytest.raises(ConfigError, match=r"wake\.stop_phrases:2: cannot encode '停下'"):
        stop_phrase_keywords(("STOP", "停下"), en)


def test_config_key_is_a_list(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text('wake:\n  stop_phrases: ["STOP @halt", "NEVER MIND"]\n', encoding="utf-8")
    assert load_settings(path).wake.stop_phrases == ("STOP @halt", "NEVER MIND")
    path.write_text("wake:\n  stop_phrases: STOP\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wake\.stop_phrases: expected a list"):
        load_settings(path)


def test_stop_labels_are_their_own_even_when_equal_to_a_wake_label():
    files, en = table(KWS_EN)
    wake = WakeWord(files, parse_keywords("FELLOW AMERICANS @hey", en),
                    stop_keywords=stop_phrase_keywords(("STOP @hey",), en))
    assert wake.labels == ["hey"] and wake.stop_labels == ["hey"]
