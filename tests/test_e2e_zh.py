"""Chinese end to end: plain-Chinese keywords, the Chinese KWS model as wake word and as (pinyin) ASR."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechdata.assets import AUDIO, KWS_ZH
from tests.conftest import require
from tests.support.cli import of, run_assistant, write_config


@pytest.mark.parametrize(
    ("clip", "keyword", "heard_after"),
    [
        # 欢迎大家 | 来体验达摩院推出的语音识别模型: the pinyin of 来体验 must be in the transcript.
        ("funasr-asr_example.wav", "欢迎大家", "láitǐyàn"),
        # 广州市 | 房地产中介协会分析: the model hears 房地产 as fǎdìchǎn on the whole clip too.
        ("wenet-aishell-BAC009S0724W0121.wav", "广州市", "dìchǎnzhōngjiè"),
    ],
)
def test_chinese_wake_transcript_reply(
    tmp_path: Path,
    tiny_llm: Path,
    clip: str,
    keyword: str,
    heard_after: str,
) -> None:
    require(KWS_ZH)
    # Both phrases in one file, written as plain Chinese: the converter makes the pinyin tokens.
    (tmp_path / "keywords.txt").write_text("欢迎大家\n广州市\n", encoding="utf-8")
    config = write_config(
        tmp_path,
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_ZH}\nllm:\n  model_dir: {tiny_llm}\n",
    )
    code, events, stderr = run_assistant(
        ["--config", str(config), "--input", str(require(AUDIO / "zh" / clip))], cwd=tmp_path
    )
    assert code == 0, stderr
    assert [w["label"] for w in of(events, "wake")] == [keyword]
    (final,) = of(events, "final")
    assert heard_after in final["text"].replace(" ", "")
    assert len(of(events, "reply")) == 1
    assert of(events, "state")[-1]["state"] == "idle"
    assert not of(events, "error")
