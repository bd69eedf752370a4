"""Where the shared test data is, and the roles the clips play. Nothing is copied into the repo.

The data lives beside the checkout in ../shared (`ASSISTANT_SHARED` overrides): `assets/` (sherpa-onnx models,
speech clips, tokenizers) and `reference/` (MiniMind conformance packs). See the PROVENANCE.md files there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve()
ASSETS = SHARED / "assets"
REFERENCE = SHARED / "reference"

AUDIO = ASSETS / "audio"
KWS_EN = ASSETS / "kws" / "en-gigaspeech-3.3M-mobile"
KWS_ZH = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile"
KWS = {"en": KWS_EN, "zh": KWS_ZH}
SILERO = ASSETS / "vad" / "silero_vad.onnx"
TOKENIZER_DIR = ASSETS / "minimind-tokenizer" / "minimind2"
TINY_CHECKPOINT = REFERENCE / "minimind2" / "minimind2-dense-tiny-random.pth"

JFK = AUDIO / "en" / "whisper-jfk.flac"  # 44.1 kHz stereo: the clips are converted on load
JFK_TEXT = "ask not what your country can do for you ask what you can do for your country"
LEOPARD = AUDIO / "en" / "picovoice-leopard-test.wav"
# The English wake phrase is the start of the JFK clip, "And so, my fellow Americans," (it fires FELLOW
# AMERICANS on the English KWS model); "ask not ..." starts after WAKE_HEAD_S.
WAKE_LABEL = "FELLOW AMERICANS"
WAKE_HEAD_S = 3.0

# English clips said after the wake phrase (none contains it).
UTTERANCE_CLIPS: tuple[Path, ...] = (
    LEOPARD,
    AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav",
    AUDIO / "en" / "lhotse-librispeech-2412-153948-0000.flac",
    AUDIO / "en" / "lhotse-librispeech-2412-153948-0001.flac",
    AUDIO / "en" / "lhotse-ljspeech-LJ002-0020.wav",
    AUDIO / "en" / "lhotse-ljspeech-LJ002-0035.wav",
)
# Speech that must never wake the English model: every shared clip but JFK, both languages.
NON_WAKE_CLIPS: tuple[Path, ...] = (
    *UTTERANCE_CLIPS,
    AUDIO / "en" / "porcupine-porcupine.wav",
    AUDIO / "zh" / "funasr-asr_example.wav",
    AUDIO / "zh" / "porcupine-haozhu.wav",
    AUDIO / "zh" / "wenet-aishell-BAC009S0724W0121.wav",
    *(KWS_ZH / "test_wavs" / f"{i}.wav" for i in range(7)),
)
# Every shared clip with a keyword the shared models know, and the labels the ungated spotter fires on it
# with `clip_keywords_file(lang, ...)`.
KEYWORD_CLIPS: list[tuple[str, Path, list[str]]] = [
    ("en", JFK, ["FELLOW_AMERICANS", "COUNTRY", "COUNTRY"]),
    ("en", LEOPARD, ["GOSPEL"]),
    ("en", AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav", ["SORROW", "COTTON"]),
    ("en", AUDIO / "en" / "lhotse-librispeech-2412-153948-0000.flac", ["COUNTRY"]),
    ("zh", AUDIO / "zh" / "funasr-asr_example.wav", ["欢迎大家", "达摩院", "语音识别"]),
    ("zh", AUDIO / "zh" / "porcupine-haozhu.wav", ["豪猪"]),
    ("zh", AUDIO / "zh" / "wenet-aishell-BAC009S0724W0121.wav", ["广州"]),
    ("zh", KWS_ZH / "test_wavs/3.wav", ["文森特卡索", "法国"]),
    ("zh", KWS_ZH / "test_wavs/4.wav", ["蒋友伯", "女儿"]),
    ("zh", KWS_ZH / "test_wavs/5.wav", ["周望军", "落实"]),
    ("zh", KWS_ZH / "test_wavs/6.wav", ["朱丽楠", "见面会"]),
]


def clip_keywords_file(lang: str, directory: Path) -> Path:
    """The shared pre-tokenized keywords for the shared clips (plus the zh model's own test keywords)."""
    kws = KWS[lang]
    text = (kws / "keywords_assets_test.txt").read_text(encoding="utf-8")
    if lang == "zh":
        text += "h uān y íng d à j iā @欢迎大家\n"
        text += (kws / "test_wavs" / "test_keywords.txt").read_text(encoding="utf-8")
    path = directory / f"keywords-{lang}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def english_settings(keywords_file: Path, llm_dir: Path, *, max_new_tokens: int = 12, **extra: Any) -> Any:
    """Daemon settings with the English KWS model as wake word and as streaming ASR, one LLM thread.

    `extra`: more dotted config keys ({"llm.greedy": True}); assistant.pipeline builds the components.
    """
    from assistant.settings import load_settings

    return load_settings(None, {
        "wake.keywords_file": keywords_file,
        "wake.model_dir": KWS_EN,
        "asr.model_dir": KWS_EN,
        "llm.model_dir": llm_dir,
        "llm.max_new_tokens": max_new_tokens,
        "llm.threads": 1,
        **extra,
    })
