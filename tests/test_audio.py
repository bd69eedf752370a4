"""Audio sources on real clips: files of any rate/channels, raw PCM on a pipe, mic error path, the ring."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest
import soundfile as sf

from assistant.audio.chunk import AudioChunk
from assistant.audio.resample import Resampler, resample
from assistant.audio.ring import AudioRing
from assistant.audio.sources import open_source
from assistant.errors import AudioError

LEOPARD = "audio/en/picovoice-leopard-test.wav"


def collect(source) -> list[AudioChunk]:
    async def run():
        return [chunk async for chunk in source]

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def test_resampler_keeps_a_tone_and_rejects_aliases():
    rate = 44100
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), rate)
    assert len(y) == 16000
    ref = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(y[500:-500] - ref[500:-500]).max() < 1e-3
    # 15 kHz cannot exist at 16 kHz: it must vanish, not fold down to 1 kHz
    alias = resample(np.sin(2 * np.pi * 15000 * t).astype(np.float32), rate)
    assert np.sqrt(np.mean(alias[500:-500] ** 2)) < 1e-3


def test_streaming_resampler_equals_one_shot():
    x = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    r = Resampler(48000, 16000)
    pieces = [r.process(x[i : i + 777], final=i + 777 >= len(x)) for i in range(0, len(x), 777)]
    assert np.allclose(np.concatenate(pieces), resample(x, 48000), atol=1e-6)


def test_stereo_44k_file_is_downmixed_resampled_and_blocked(assets, tmp_path):
    mono, rate = sf.read(assets / LEOPARD, dtype="float32")
    assert rate == 16000
    stereo44 = resample(mono, 16000, 44100)
    path = tmp_path / "stereo44.wav"
    sf.write(path, np.stack([stereo44, 0.5 * stereo44], axis=1), 44100)
    chunks = collect(open_source(str(path)))
    assert all(len(c.samples) == 1600 for c in chunks[:-1]) and 0 < len(chunks[-1].samples) <= 1600
    assert all(c.samples.dtype == np.float32 for c in chunks)
    assert [c.t for c in chunks[:3]] == [0.0, 0.1, 0.2]
    audio = np.concatenate([c.samples for c in chunks])
    assert abs(len(audio) - len(mono)) <= 2
    # downmix = mean of channels = 0.75 x original, back at 16 kHz
    n = min(len(audio), len(mono))
    assert np.corrcoef(audio[:n], mono[:n])[0, 1] > 0.99
    assert np.std(audio) == pytest.approx(0.75 * np.std(mono), rel=0.02)


def test_flac_and_22k_files(assets):
    chunks = collect(open_source(str(assets / "audio/en/lhotse-ljspeech-LJ002-0020.wav")))
    assert sum(len(c.samples) for c in chunks) == pytest.approx(1.54 * 16000, abs=200)


def test_missing_and_unreadable_files_are_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="nope.wav"):
        open_source(str(tmp_path / "nope.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file" * 10)
    with pytest.raises(AudioError, match="junk.wav"):
        open_source(str(junk))


def test_realtime_pacing_yields_in_order(assets, tmp_path):
    path = tmp_path / "short.wav"
    mono, _ = sf.read(assets / LEOPARD, dtype="float32", frames=8000)
    sf.write(path, mono, 16000)
    chunks = collect(open_source(str(path), realtime=True))
    assert len(chunks) == 5 and chunks[-1].t == pytest.approx(0.4)


def test_raw_pcm_from_a_pipe(assets):
    mono, _ = sf.read(assets / LEOPARD, dtype="int16")
    data = mono.astype("<i2").tobytes() + b"\x01"  # a stray odd byte at the end is ignored
    read_fd, write_fd = os.pipe()

    def writer():
        with os.fdopen(write_fd, "wb") as out:
            for i in range(0, len(data), 1000):  # arbitrary pieces, not aligned to samples or blocks
                out.write(data[i : i + 1000])

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_fd, "rb") as stream:
        chunks = collect(open_source("-", stdin=stream))
    thread.join()
    audio = np.concatenate([c.samples for c in chunks])
    assert len(audio) == len(mono)
    assert np.allclose(audio, mono / 32768.0)
    assert chunks[1].t == pytest.approx(0.1)


def test_raw_pcm_at_another_rate_is_resampled(assets):
    import io

    mono, _ = sf.read(assets / LEOPARD, dtype="float32")
    pcm8k = (resample(mono, 16000, 8000) * 32767).astype("<i2").tobytes()
    chunks = collect(open_source("-", stdin=io.BytesIO(pcm8k), pcm_rate=8000))
    assert abs(sum(len(c.samples) for c in chunks) - len(mono)) <= 2


def test_microphone_without_portaudio_is_a_clear_error():
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pass
    else:
        pytest.skip("PortAudio is installed here: the missing-library path cannot be exercised")
    with pytest.raises(AudioError, match="libportaudio2"):
        open_source("mic")


def test_ring_returns_audio_since_a_time_and_forgets_old_audio():
    ring = AudioRing(seconds=1.0)
    for i in range(20):
        ring.push(AudioChunk(np.full(1600, i, dtype=np.float32), t=i * 0.1))
    assert ring.end_t == pytest.approx(2.0)
    assert ring.start_t == pytest.approx(1.0)
    tail = ring.since(1.55)
    assert len(tail) == 7200 and tail[0] == 15 and tail[800] == 16
    assert len(ring.since(0.0)) == 16000  # older than held: from the oldest
    assert len(ring.since(5.0)) == 0
