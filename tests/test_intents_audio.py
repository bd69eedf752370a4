"""Intents end to end through audio: `assistant run --input FILE --json` in a subprocess, real KWS models as
wake word and as recognizer, the reply event naming the intent that answered.

Which audio the shipped recognizers hear right (checked by hand, see BENCHMARKS.md "Intents"):
- English: espeak-ng `-v en-us -s 130 -g 4 "what time is it"` after the JFK clip's "my fellow Americans" is
  transcribed WHAT TIME IS IT. (Timer phrasings: see tests/test_timers.py.)
- Chinese: the Chinese KWS model hears none of espeak-ng's Mandarin (现在几点 comes out as nàyùnfēngfù), and no
  shared Chinese clip asks an everyday question. The Chinese test therefore uses the real FunASR clip, whose
  rest after the wake phrase 欢迎大家 the model hears exactly (dàjiāláitǐyàndámóyuàntuīchūdeyǔyīnshíbiémóxíng),
  with a user sentence file for it: the pinyin path, the zh response and the user extension through audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechdata.assets import AUDIO, KWS_EN, KWS_ZH
from speechdata.audio import load_clip as load_mono16k
from speechdata.audio import silence, write_wav
from tests.conftest import require
from tests.support.cli import of, run_assistant, write_config
from tests.support.speech import JFK_HEAD_S, espeak


def test_english_question_answered_by_intent_through_audio(tmp_path: Path, tiny_llm: Path) -> None:  # noqa: F811
    require(KWS_EN)
    head = load_mono16k(AUDIO / "en" / "whisper-jfk.flac")[: int(JFK_HEAD_S * 16000)]
    audio = write_wav(tmp_path / "q.wav", head, espeak(tmp_path / "say.wav", "what time is it"), silence(2.0))
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    config = write_config(tmp_path, f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n"
                                    f"llm:\n  model_dir: {tiny_llm}\npaths:\n  state_dir: state\n")
    code, events, stderr = run_assistant(["--config", str(config), "--input", str(audio)], cwd=tmp_path)
    assert code == 0, stderr
    (final,) = of(events, "final")
    assert final["text"] == "WHAT TIME IS IT"
    (reply,) = of(events, "reply")
    assert reply["intent"] == "HassGetCurrentTime" and reply["text"].startswith("It's "), reply
    assert not of(events, "first_token")  # the language model was not asked
    assert of(events, "state")[-1]["state"] == "idle" and not of(events, "error")


def test_chinese_clip_answered_by_a_user_intent_through_audio(tmp_path: Path, tiny_llm: Path) -> None:  # noqa: F811
    require(KWS_ZH)
    custom = tmp_path / "intents"
    custom.mkdir()
    (custom / "demo.yaml").write_text(
        "language: zh\nintents:\n  WelcomeDemo:\n    data:\n      - sentences:\n"
        # The KWS-as-ASR stand-in sometimes hears 语音 (yǔyīn) as yǐnyīn (引音), depending on where the recognizer
        # starts: a user writing sentences for a weak recognizer lists what it hears, as here.
        '          - "[大家]来体验达摩院推出的(语音|引音)识别模型"\n', encoding="utf-8")
    (custom / "demo-responses.yaml").write_text(
        'language: zh\nresponses:\n  intents:\n    WelcomeDemo:\n      default: "谢谢，欢迎体验。"\n', encoding="utf-8")
    (tmp_path / "keywords.txt").write_text("欢迎大家\n", encoding="utf-8")
    config = write_config(tmp_path, f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_ZH}\n"
                                    f"llm:\n  model_dir: {tiny_llm}\nintents:\n  custom_dir: intents\n"
                                    "paths:\n  state_dir: state\n")
    clip = require(AUDIO / "zh" / "funasr-asr_example.wav")
    code, events, stderr = run_assistant(["--config", str(config), "--input", str(clip)], cwd=tmp_path)
    assert code == 0, stderr
    (final,) = of(events, "final")
    assert "láitǐyàn" in final["text"]  # toned pinyin: the Chinese KWS model as recognizer
    (reply,) = of(events, "reply")
    assert (reply["intent"], reply["text"]) == ("WelcomeDemo", "谢谢，欢迎体验。"), reply
    assert not of(events, "first_token") and not of(events, "error")
    assert np.isclose(of(events, "state")[-1]["t"], reply["t"])
