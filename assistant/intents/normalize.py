"""Turn a transcript in any recognizer's output style into the text the templates are matched against.

Three styles reach the intent layer:
- English from the sherpa KWS-as-ASR or a real English model: UPPERCASE, no punctuation, numbers as words
  ("SET A TIMER FOR FIVE MINUTES"). Lower-cased, and numbers become digits with text2num ("... for 5 minutes").
- Chinese characters from a real Chinese model ("设置五分钟计时器", or with ITN "设置5分钟计时器"). Runs of
  Chinese numerals become digits with cn2an ("设置5分钟计时器"); a lone 一 is left alone (一下, 一个, 统一 are
  not numbers) and hassil's own number words read it where a template wants a number.
- Toned pinyin from the Chinese KWS model used as a stand-in recognizer ("xiànzàijǐdiǎn" or
  "xiàn zài jǐ diǎn"). It cannot be turned back into characters reliably (homophones), so the Chinese
  templates are transliterated instead (loader.to_pinyin_dict) and both sides are compared as toneless pinyin
  without spaces; numbers there are matched as pinyin words (loader.pinyin_number_list), not digits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Style = Literal["en", "zh", "pinyin"]

_CJK = re.compile(r"[\u3400-\u9fff]")
# Latin letters with a tone mark (ā á ǎ à ...), which English transcripts never have.
_TONED = re.compile(r"[āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ]")
_ZH_NUMERAL_RUN = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
# 三点五公斤: a decimal only before a unit (十点三十分 and 七点半 are clock times).
_ZH_DECIMAL = re.compile(
    r"([零〇一二两三四五六七八九十百千万]+)点([零〇一二三四五六七八九]+)(?=[公千米厘毫英码克斤磅盎升加摄华开度])"
)
_ZH_PUNCT = re.compile(r"[，。！？、；：“”‘’（）《》\s,.!?;:'\"()]+")
_EN_PUNCT = re.compile(r"[^\w\s:+\-*/.%']")


@dataclass(frozen=True)
class Normalized:
    style: Style
    language: Literal["en", "zh"]
    text: str


def detect_style(text: str) -> Style:
    if _CJK.search(text):
        return "zh"
    if _TONED.search(text.lower()):
        return "pinyin"
    return "en"


def normalize(text: str) -> Normalized:
    style = detect_style(text)
    if style == "zh":
        return Normalized("zh", "zh", normalize_zh(text))
    if style == "pinyin":
        return Normalized("pinyin", "zh", normalize_pinyin(text))
    return Normalized("en", "en", normalize_en(text))


def normalize_en(text: str) -> str:
    from text_to_num import alpha2digit

    text = " ".join(_EN_PUNCT.sub(" ", text.lower()).split())
    # threshold=0: "one minute" -> "1 minute" too (the default keeps small numbers as words).
    text = alpha2digit(text, "en", threshold=0)
    # text2num reads the unit "second" as an ordinal: "ten second" -> "10 2nd". After a number it is the unit.
    text = re.sub(r"\b(\d+(?:\.\d+)?) 2nd\b", r"\1 second", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", r"\1", text)  # march 3rd -> march 3
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", r"\1 \2", text)  # 7:30 -> 7 30, as spoken
    # "a 100" (from "a hundred") reads as 100
    return re.sub(r"\ba (\d)", r"\1", text)


def _zh_number(match: re.Match[str]) -> str:
    import cn2an

    run = match.group(1) if match.re.groups else match.group(0)
    if run == "一":
        return run
    try:
        value = cn2an.cn2an(run, "smart")
    except (ValueError, KeyError):
        return run  # not a well-formed number (五三): left as it is, hassil's number words may still read it
    return str(int(value)) if float(value).is_integer() else str(value)


_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _zh_decimal(match: re.Match[str]) -> str:
    whole = _zh_number(match)  # the integer part: match.group(0) would include the decimals
    return f"{whole}.{''.join(str(_ZH_DIGITS[c]) for c in match.group(2))}"


def normalize_zh(text: str) -> str:
    text = _ZH_PUNCT.sub("", text)
    text = _ZH_DECIMAL.sub(_zh_decimal, text)
    return _ZH_NUMERAL_RUN.sub(_zh_number, text)


def strip_tones(text: str) -> str:
    """Toneless pinyin without spaces or punctuation: "xiàn zài jǐ diǎn" -> "xianzaijidian" (ü -> u)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]", "", plain)


def normalize_pinyin(text: str) -> str:
    return strip_tones(text)
