"""The echo canceller's reference path, without the daemon: the paced sink's output clock, the reference
stream at input positions, and Speex cancelling an echo fed through played()/process() as the daemon does.
Real espeak-ng speech, the simulated room; no clocks are asserted, only where samples land."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from assistant.audio.aec import FRAME, EchoCanceller, ReferenceStream
from assistant.audio.aec import available as aec_available
from assistant.audio.chunk import AudioChunk
from assistant.audio.resample import resample
from assistant.reply.tts import STOP_SLICE_S, EspeakTts, WavFileOutput
from assistant.settings import TtsSettings
from speechdata.echo_room import Room, rms

RATE = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def voice() -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    return EspeakTts(TtsSettings(engine="espeak")).synthesize(
        "The assistant answers a question about the weather, and then it keeps talking for a while.")


@needs_espeak
def test_the_paced_sink_reports_slices_on_its_period_grid(voice, tmp_path):
    samples, rate = voice
    times: list[float] = []
    output = WavFileOutput(tmp_path / "spoken.wav", realtime=True)
    output.listener = lambda x, r, t: times.append(t)
    stop = threading.Event()
    output.play(samples[: rate // 2], rate, stop)
    output.play(samples[rate // 2 : rate], rate, stop)  # a second sentence on the same clock
    output.close()
    period = int(rate * STOP_SLICE_S) / rate
    steps = np.diff(times) / period
    # every slice starts a whole number of periods after the previous one (a gap only if the writer fell behind)
    assert np.allclose(steps, np.round(steps), atol=1e-6) and (np.round(steps) >= 1).all()


@needs_espeak
def test_a_run_of_slices_is_one_continuous_reference(voice):
    samples, rate = voice
    step = int(rate * STOP_SLICE_S)
    stream = ReferenceStream()
    pieces = []
    for k, i in enumerate(range(0, len(samples), step)):
        pieces += stream.add(samples[i : i + step], rate, 1.0 + k * step / rate)
    pieces += stream.flush()
    assert pieces[0][0] == RATE  # placed at input time 1.0 s
    joined = np.concatenate([p for _, p in pieces])
    assert [pos for pos, _ in pieces] == list(np.cumsum([RATE] + [len(p) for _, p in pieces[:-1]]))
    whole = resample(samples.astype(np.float32), rate, RATE)
    assert abs(len(joined) - len(whole)) <= 1
    n = min(len(joined), len(whole))
    assert np.allclose(joined[:n], whole[:n], atol=1e-4)  # the same as resampling the sentence at once


@needs_espeak
@pytest.mark.skipif(not aec_available(), reason="needs speexdsp (pip install edge-assistant[aec])")
def test_the_canceller_removes_an_echo_fed_slice_by_slice(voice):
    """Our speech played in 20 ms slices on an output clock, its echo through the room in 100 ms input
    chunks: after a few seconds of adapting, Speex takes >= 20 dB out."""
    samples, rate = voice
    step = int(rate * STOP_SLICE_S)
    speech = np.concatenate([samples] * 4)  # ~16 s
    offset = 1000.0  # monotonic time of input t = 0
    start_t = 0.5
    played = resample(speech.astype(np.float32), rate, RATE)
    echo = np.convolve(played, Room(delay_s=0.05, gain_db=-6.0).impulse_response())
    mic = np.zeros(int(start_t * RATE) + len(echo), np.float32)
    mic[int(start_t * RATE) :] = echo
    canceller = EchoCanceller()
    for k, i in enumerate(range(0, len(speech), step)):
        canceller.played(speech[i : i + step], rate, offset + start_t + k * step / rate, offset)
    out = np.concatenate([canceller.process(AudioChunk(mic[i : i + 1600], i / RATE)).samples
                          for i in range(0, len(mic) - 1600, 1600)])
    assert canceller.late_samples == 0 and len(out) % FRAME == 0
    tail = slice(8 * RATE, len(out))
    erle = 20 * np.log10(rms(mic[tail]) / rms(out[tail]))
    assert erle >= 20.0, erle
