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

    .venv/bin/python -m bench.idle [--minutes 10] [--noise-dbfs -55] [--realtime]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import sherpa_onnx

from assistant.audio.chunk import AudioChunk
from assistant.settings import GateSettings
from assistant.wake.gate import GatedWakeWord, make_gate
from speechdata.assets import KEYWORD_CLIPS, KWS, SILERO, clip_keywords_file
from speechdata.audio import SAMPLE_RATE, chunks, load_clip, pink_noise

log = logging.getLogger("bench.idle")


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

    def accept(self, chunk: AudioChunk) -> tuple[str, float] | None:
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
        return self.accept(AudioChunk(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), self.t_end))


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
    spotter = Spotter("en", clip_keywords_file("en", work))
    silence = pink_noise(args.minutes * 60, args.noise_dbfs, seed=7, drift_db=3.0)
    clips = [load_clip(clip) for lang, clip, _ in KEYWORD_CLIPS if lang == "en"]
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
