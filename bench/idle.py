"""Idle CPU of the wake-word loop: ungated vs energy gate vs silero gate, measured in the same run.

Default (fast): the audio is fed as fast as possible and the figure is process CPU seconds per second of
audio, as % of one core: what the loop would cost fed in real time, minus the sleeping. `--realtime` paces
the chunks like a microphone (sleeping until each chunk's time) and reports CPU time / wall time, the honest
version; it takes as long as the audio per configuration.

Scenes (16 kHz, 100 ms chunks):
- silence: pink noise ("room tone") at --noise-dbfs RMS, its level drifting +-3 dB over tens of seconds,
  for --minutes; optionally the recorded pauses of the shared clips are spliced in (--with-pauses).
- speech: every shared clip back to back (about a minute), looped to --speech-minutes.
Each scene also reports the wake labels each configuration fired, which must be identical.

    .venv/bin/python bench/idle.py [--minutes 10] [--noise-dbfs -55] [--realtime]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sherpa_onnx
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from assistant.settings import GateSettings  # noqa: E402
from assistant.wake.gate import GatedWakeWord, make_gate  # noqa: E402

SAMPLE_RATE = 16000
SHARED = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve()
ASSETS = SHARED / "assets"
KWS = {
    "en": ASSETS / "kws" / "en-gigaspeech-3.3M-mobile",
    "zh": ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile",
}
SILERO = ASSETS / "vad" / "silero_vad.onnx"

log = logging.getLogger("bench.idle")


def pink_noise(seconds: float, dbfs: float, seed: int = 0, drift_db: float = 0.0) -> np.ndarray:
    """1/f noise with RMS `dbfs`; `drift_db` adds a slow (~20 s period) level wander, like a real room."""
    n = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise *= 10 ** (dbfs / 20) / np.sqrt(np.mean(noise**2))
    if drift_db:
        t = np.arange(n) / SAMPLE_RATE
        noise *= 10 ** (drift_db * np.sin(2 * np.pi * t / 23.0 + rng.uniform(0, 6.28)) / 20)
    return noise.astype(np.float32)


def load_16k(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz (band-limited FFT resampling: no scipy on the board)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate == SAMPLE_RATE:
        return mono.astype(np.float32)
    n_out = int(round(len(mono) * SAMPLE_RATE / rate))
    spectrum = np.fft.rfft(mono)
    kept = np.zeros(n_out // 2 + 1, dtype=complex)
    m = min(len(spectrum), len(kept))
    kept[:m] = spectrum[:m]
    return (np.fft.irfft(kept, n_out) * n_out / len(mono)).astype(np.float32)


@dataclass(frozen=True)
class Chunk:
    """Same shape as assistant.audio.sources.AudioChunk: float32 16 kHz mono samples starting at `t` seconds."""

    samples: np.ndarray
    t: float


def chunks(audio: np.ndarray, block_s: float = 0.1) -> Iterator[Chunk]:
    step = int(block_s * SAMPLE_RATE)
    for i in range(0, len(audio), step):
        yield Chunk(audio[i : i + step], i / SAMPLE_RATE)


class Spotter:
    """The raw sherpa-onnx keyword loop (accept -> drain is_ready -> result -> reset), WakeWord's shape."""

    def __init__(self, lang: str, keywords_file: Path, threshold: float = 0.25) -> None:
        d = KWS[lang]
        self.kws = sherpa_onnx.KeywordSpotter(
            tokens=str(d / "tokens.txt"),
            encoder=str(next(d.glob("encoder*.onnx"))),
            decoder=str(next(d.glob("decoder*.onnx"))),
            joiner=str(next(d.glob("joiner*.onnx"))),
            keywords_file=str(keywords_file),
            num_threads=1,
            keywords_threshold=threshold,
        )
        self.stream = self.kws.create_stream()
        self.t_end = 0.0

    def accept(self, chunk: Chunk) -> tuple[str, float] | None:
        self.t_end = chunk.t + len(chunk.samples) / SAMPLE_RATE
        self.stream.accept_waveform(SAMPLE_RATE, chunk.samples)
        found = None
        while self.kws.is_ready(self.stream):
            self.kws.decode_stream(self.stream)
            label = self.kws.get_result(self.stream)
            if label:
                found = (label, chunk.t + len(chunk.samples) / SAMPLE_RATE)
                self.kws.reset_stream(self.stream)
        return found

    def reset(self) -> None:
        self.stream = self.kws.create_stream()

    def flush(self) -> tuple[str, float] | None:
        # A keyword at the very end is only emitted after ~0.5 s of trailing audio.
        return self.accept(Chunk(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), self.t_end))


def keywords_file(lang: str, directory: Path) -> Path:
    """The shared pre-tokenized keywords for the shared clips (plus the zh model's own test keywords)."""
    kws = KWS[lang]
    text = (kws / "keywords_assets_test.txt").read_text(encoding="utf-8")
    if lang == "zh":
        text += "h uān y íng d à j iā @欢迎大家\n"
        text += (kws / "test_wavs" / "test_keywords.txt").read_text(encoding="utf-8")
    path = directory / f"keywords-{lang}.txt"
    path.write_text(text, encoding="utf-8")
    return path


# Every shared clip with a keyword the shared models know, and the labels the ungated spotter fires on it.
KEYWORD_CLIPS: list[tuple[str, Path, list[str]]] = [
    ("en", ASSETS / "audio/en/whisper-jfk.flac", ["FELLOW_AMERICANS", "COUNTRY", "COUNTRY"]),
    ("en", ASSETS / "audio/en/picovoice-leopard-test.wav", ["GOSPEL"]),
    ("en", ASSETS / "audio/en/wenet-librispeech-1995-1837-0001.wav", ["SORROW", "COTTON"]),
    ("en", ASSETS / "audio/en/lhotse-librispeech-2412-153948-0000.flac", ["COUNTRY"]),
    ("zh", ASSETS / "audio/zh/funasr-asr_example.wav", ["欢迎大家", "达摩院", "语音识别"]),
    ("zh", ASSETS / "audio/zh/porcupine-haozhu.wav", ["豪猪"]),
    ("zh", ASSETS / "audio/zh/wenet-aishell-BAC009S0724W0121.wav", ["广州"]),
    ("zh", KWS["zh"] / "test_wavs/3.wav", ["文森特卡索", "法国"]),
    ("zh", KWS["zh"] / "test_wavs/4.wav", ["蒋友伯", "女儿"]),
    ("zh", KWS["zh"] / "test_wavs/5.wav", ["周望军", "落实"]),
    ("zh", KWS["zh"] / "test_wavs/6.wav", ["朱丽楠", "见面会"]),
]


def run_spotter(wake: object, audio: np.ndarray) -> list[tuple[str, float]]:
    """Feed `audio` chunk by chunk, then flush; return (label, t) of every detection."""
    found = []
    for chunk in chunks(audio):
        hit = wake.accept(chunk)  # type: ignore[attr-defined]
        if hit:
            found.append(hit)
    hit = wake.flush()  # type: ignore[attr-defined]
    if hit:
        found.append(hit)
    return found


def measure(wake: object, audio: np.ndarray, realtime: bool) -> tuple[float, list[str]]:
    """CPU % of one core for the loop over `audio`, and the labels it fired."""
    labels = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for chunk in chunks(audio):
        if realtime:
            delay = wall0 + chunk.t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        hit = wake.accept(chunk)  # type: ignore[attr-defined]
        if hit:
            labels.append(hit[0])
    cpu = time.process_time() - cpu0
    span = (time.perf_counter() - wall0) if realtime else len(audio) / SAMPLE_RATE
    return 100.0 * cpu / span, labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of room noise (silence scene)")
    parser.add_argument("--noise-dbfs", type=float, default=-55.0, help="room noise RMS level, dBFS")
    parser.add_argument("--realtime", action="store_true", help="pace chunks like a microphone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    spotter = Spotter("en", keywords_file("en", work))
    silence = pink_noise(args.minutes * 60, args.noise_dbfs, seed=7, drift_db=3.0)
    clips = [load_16k(clip) for lang, clip, _ in KEYWORD_CLIPS if lang == "en"]
    gap = pink_noise(0.3, args.noise_dbfs, seed=8)
    speech = np.concatenate([part for clip in clips for part in (clip, gap)])
    configs = {
        "ungated": lambda: spotter,
        "energy gate": lambda: GatedWakeWord(spotter, make_gate(GateSettings())),
        "silero gate": lambda: GatedWakeWord(
            spotter, make_gate(GateSettings(kind="silero", silero_model=str(SILERO)))
        ),
    }
    mode = "CPU/wall, paced in real time" if args.realtime else "CPU s per audio s, fed as fast as possible"
    print(f"idle CPU, % of one core ({mode}); en KWS, 1 thread, 100 ms chunks")
    print(f"silence: {args.minutes:g} min pink noise {args.noise_dbfs:g} dBFS +-3 dB drift; "
          f"speech: {len(speech) / SAMPLE_RATE:.0f} s of en clips back to back")
    print(f"{'config':12s} {'silence %':>10s} {'speech %':>9s} {'openings':>9s}  speech labels")
    for name, make in configs.items():
        spotter.reset()
        wake = make()
        quiet, fired_quiet = measure(wake, silence, args.realtime)
        openings = getattr(wake, "openings", 0)
        spotter.reset()
        wake = make()
        busy, fired = measure(wake, speech, args.realtime)
        print(f"{name:12s} {quiet:10.3f} {busy:9.2f} {openings:9d}  {' '.join(fired)}"
              + (f"  (false alarms in silence: {fired_quiet})" if fired_quiet else ""))


if __name__ == "__main__":
    main()
