"""Wake word on real models and real speech, keywords written as plain text and converted by the project."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.audio.resample import resample
from assistant.audio.sources import open_source
from assistant.errors import ModelError
from assistant.models.files import find_transducer
from assistant.wake.keywords import load_keywords, load_tokens, parse_keywords
from assistant.wake.spotter import Detection, WakeWord

EN = "kws/en-gigaspeech-3.3M-mobile"
ZH = "kws/zh-wenetspeech-3.3M-mobile"


def spotter(assets: Path, model: str, text: str, **options) -> WakeWord:
    files = find_transducer(assets / model, "kws")
    return WakeWord(files, parse_keywords(text, load_tokens(files.tokens)), **options)


def chunks_of(audio: np.ndarray) -> list[AudioChunk]:
    return [AudioChunk(audio[i : i + 1600], i / SAMPLE_RATE) for i in range(0, len(audio), 1600)]


def spot_file(wake: WakeWord, path: Path) -> list[Detection]:
    async def run():
        hits = [hit async for chunk in open_source(str(path)) if (hit := wake.accept(chunk))]
        if (hit := wake.flush()) is not None:
            hits.append(hit)
        return hits

    return asyncio.run(asyncio.wait_for(run(), timeout=60))


def spot_samples(wake: WakeWord, audio: np.ndarray) -> list[Detection]:
    hits = [hit for chunk in chunks_of(audio) if (hit := wake.accept(chunk))]
    if (hit := wake.flush()) is not None:
        hits.append(hit)
    return hits


def test_english_plain_keyword_fires_on_jfk_with_label(assets, tmp_path):
    files = find_transducer(assets / EN, "kws-en")
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("# wake words\nfellow americans @FELLOW_AMERICANS\nhey computer\n", encoding="utf-8")
    wake = WakeWord(files, load_keywords(keywords, load_tokens(files.tokens)))
    hits = spot_file(wake, assets / "audio/en/whisper-jfk.flac")
    assert [h.label for h in hits] == ["FELLOW_AMERICANS"]
    hit = hits[0]
    assert hit.keyword_text == "fellow americans"
    # "Americans" ends at ~2.15 s of the clip; the report comes a little later, t_end goes back to it
    assert 2.2 <= hit.t <= 3.2
    assert hit.timed and abs(hit.t_end - 2.15) < 0.2 and hit.t_end < hit.t


def test_chinese_plain_keywords_fire(assets):
    wake = spotter(assets, ZH, "欢迎大家\n广州市\n小爱同学")
    assert [h.label for h in spot_file(wake, assets / "audio/zh/funasr-asr_example.wav")] == ["欢迎大家"]
    aishell = assets / "audio/zh/wenet-aishell-BAC009S0724W0121.wav"
    assert [h.label for h in spot_file(wake, aishell)] == ["广州市"]


def test_chinese_test_wavs_from_plain_text(assets, tmp_path):
    # the upstream keyword list (test_wavs/test_keywords.txt), written as plain Chinese
    expected = {
        3: ["文森特卡索", "法国"], 4: ["蒋友伯", "女儿"], 5: ["周望军", "落实"], 6: ["朱丽楠", "见面会"],
    }
    plain = tmp_path / "keywords.txt"
    plain.write_text("\n".join(w for words in expected.values() for w in words) + "\n", encoding="utf-8")
    files = find_transducer(assets / ZH, "kws-zh")
    wake = WakeWord(files, load_keywords(plain, load_tokens(files.tokens)))
    for i in range(7):
        hits = spot_file(wake, assets / ZH / f"test_wavs/{i}.wav")
        assert [h.label for h in hits] == expected.get(i, []), f"{i}.wav"


def test_stereo_44k_input_still_detects(assets, tmp_path):
    mono, _ = sf.read(assets / "audio/en/picovoice-leopard-test.wav", dtype="float32")
    up = resample(mono, 16000, 44100)
    path = tmp_path / "leopard-stereo-44k.wav"
    sf.write(path, np.stack([up, up], axis=1), 44100, subtype="PCM_16")
    wake = spotter(assets, EN, "APOSTLE\nGOSPEL")
    assert [h.label for h in spot_file(wake, path)] == ["APOSTLE", "GOSPEL"]


def test_keyword_at_the_very_end_needs_flush(assets):
    mono, _ = sf.read(assets / "audio/en/picovoice-leopard-test.wav", dtype="float32")
    wake = spotter(assets, EN, "GOSPEL")
    live = [h for c in chunks_of(mono) if (h := wake.accept(c))]
    assert live == []
    hit = wake.flush()
    assert hit is not None and hit.label == "GOSPEL" and hit.t == pytest.approx(len(mono) / SAMPLE_RATE)


@pytest.mark.parametrize("kind", ["silence", "noise", "clipped"])
def test_no_detection_on_silence_noise_and_clipped_audio(assets, kind):
    rng = np.random.default_rng(1)
    if kind == "silence":
        audio = np.zeros(5 * SAMPLE_RATE, np.float32)
    elif kind == "noise":
        audio = rng.uniform(-1, 1, 5 * SAMPLE_RATE).astype(np.float32)
    else:  # speech driven far into clipping, without the keyword
        speech, _ = sf.read(assets / "audio/en/lhotse-librispeech-2412-153948-0000.flac", dtype="float32")
        audio = np.clip(speech[: 5 * SAMPLE_RATE] * 50, -1, 1)
    wake = spotter(assets, EN, "FELLOW AMERICANS\nHEY COMPUTER")
    assert spot_samples(wake, audio) == []


def test_stream_is_reset_after_detection_and_detects_again(assets):
    mono, _ = sf.read(assets / "audio/zh/porcupine-haozhu.wav", dtype="float32")
    wake = spotter(assets, ZH, "豪猪")
    twice = np.concatenate([mono, np.zeros(8000, np.float32), mono])
    assert [h.label for h in spot_samples(wake, twice)] == ["豪猪", "豪猪"]


def test_a_new_keyword_list_is_a_new_spotter_and_an_empty_one_is_refused(assets):
    # A reload builds a new WakeWord off the hot path (pipeline.build_wake); the running one is untouched.
    old = spotter(assets, ZH, "广州市")
    table = load_tokens(old.files.tokens)
    new = WakeWord(old.files, parse_keywords("欢迎大家", table))
    assert new.labels == ["欢迎大家"] and old.labels == ["广州市"]
    with pytest.raises(ModelError):
        WakeWord(old.files, [])
    assert [h.label for h in spot_file(new, assets / "audio/zh/funasr-asr_example.wav")] == ["欢迎大家"]


def test_missing_model_files_name_the_fetch_command(assets, tmp_path):
    with pytest.raises(ModelError, match="assistant models fetch kws-zh"):
        find_transducer(tmp_path / "missing", "kws-zh")
    partial = tmp_path / "kws"
    partial.mkdir()
    (partial / "tokens.txt").write_text("<blk> 0\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"encoder\*\.onnx.*assistant models fetch kws-en"):
        find_transducer(partial, "kws-en")
    files = find_transducer(assets / EN, "kws-en")
    assert files.encoder.name.endswith(".int8.onnx") and files.joiner.name.endswith(".int8.onnx")
    assert not files.decoder.name.endswith(".int8.onnx") and files.bpe_model is None
