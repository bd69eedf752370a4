"""Barge-in: the assistant's own voice through a simulated room, with and without an acoustic echo canceller.

Material: espeak-ng reading answers (OpenBookQA questions and answers; the assistant's own speech, --minutes of
it), fed back through tests/echo_room.Room (50 ms, -6 dB, synthetic reverberant tail). The spotter is the one
the daemon runs (gated, en KWS, wake word FELLOW AMERICANS, the default stop phrases plus SORROW).
The canceller is speexdsp's (the Speex MDF echo canceller, Debian's libspeexdsp through the `speexdsp` binding,
10 ms frames, 256 ms filter) given the exact reference, as the daemon would get it from its own output.

1. self-wakes per hour of the assistant's own speech: any detection on the echo alone;
2. barge-in recall at speech-to-echo ratios -10, -5, 0, +5 dB: the real JFK wake phrase ("And so, my fellow
   Americans,") and the real SORROW (LibriSpeech clip) planted over the echo at --trials positions;
3. stop-to-silence (--live N): the daemon on a real-time source (tests/echo_room.LiveSource), SORROW planted
   once the assistant speaks; the end of SORROW in the input (its token time in the clean clip) to the last TTS
   sample the paced WAV sink wrote, both on the input's audio clock. Without the canceller (the daemon has
   none yet), at +20 dB so the stop is heard.

    .venv/bin/python -m bench.bargein [--minutes 3] [--trials 6] [--live 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.cpu import describe_cpu
from bench.stop_phrases import espeak, replies
from speechdata.assets import AUDIO, KWS_EN
from speechdata.audio import load_clip
from speechdata.echo_room import EchoLoop, LiveSource, LoopbackOutput, Room, rms

REPO = Path(__file__).resolve().parents[1]

RATE = 16000
ROOM = Room(delay_s=0.05, gain_db=-6.0)
SERS = (-10.0, -5.0, 0.0, 5.0)
SORROW_CLIP = AUDIO / "en" / "wenet-librispeech-1995-1837-0001.wav"


def cancel_echo(mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import speexdsp

    ec = speexdsp.EchoCanceller.create(160, 4096, RATE)
    m16 = (np.clip(mic, -1, 1) * 32767).astype(np.int16)
    r16 = (np.clip(ref, -1, 1) * 32767).astype(np.int16)
    out = np.zeros_like(mic)
    for i in range(0, len(mic) - 159, 160):
        frame = ec.process(m16[i : i + 160].tobytes(), r16[i : i + 160].tobytes())
        out[i : i + 160] = np.frombuffer(frame, np.int16) / 32767.0
    return out


def make_spotter():
    from assistant.models.files import find_transducer
    from assistant.settings import GateSettings
    from assistant.wake.gate import gated
    from assistant.wake.keywords import load_tokens, parse_keywords, stop_phrase_keywords
    from assistant.wake.spotter import WakeWord

    files = find_transducer(KWS_EN, "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    stops = stop_phrase_keywords(None, table) + parse_keywords("SORROW @sorrow", table)
    return gated(WakeWord(files, parse_keywords("FELLOW AMERICANS", table), stop_keywords=stops), GateSettings())


def detect(wake, audio: np.ndarray) -> list:
    from assistant.audio.chunk import AudioChunk

    wake.reset()
    found = []
    for i in range(0, len(audio), 1600):
        hit = wake.accept(AudioChunk(audio[i : i + 1600], i / RATE))
        if hit is not None:
            found.append(hit)
    hit = wake.flush()
    return found + ([hit] if hit is not None else [])


def offline(minutes: float, trials: int) -> dict:
    texts = replies("en", 200)
    speech: list[np.ndarray] = []
    while sum(len(s) for s in speech) < minutes * 60 * RATE and texts:
        speech += [espeak(texts.pop(0), "en"), np.zeros(RATE // 3, np.float32)]
    ref = np.concatenate(speech)
    echo = np.convolve(ref, ROOM.impulse_response())[: len(ref)].astype(np.float32)
    started = time.perf_counter()
    cleaned = cancel_echo(echo, ref)
    aec_rtf = (time.perf_counter() - started) / (len(ref) / RATE)
    erle = 20 * np.log10(rms(echo[RATE * 5 :]) / max(rms(cleaned[RATE * 5 :]), 1e-9))
    wake = make_spotter()
    hours = len(ref) / RATE / 3600
    result = {
        "own_speech_min": len(ref) / RATE / 60,
        "self_wakes_per_h": {"none": len(detect(wake, echo)) / hours, "aec": len(detect(wake, cleaned)) / hours},
        "erle_db": erle, "aec_rtf": aec_rtf, "recall": {},
    }
    phrases = {
        "wake FELLOW AMERICANS": (load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)], "wake"),
        "stop SORROW": (load_clip(SORROW_CLIP)[: int(3.5 * RATE)], "sorrow"),
    }
    echo_level = rms(echo[np.abs(echo) > 0.01])
    rng = np.random.default_rng(0)
    span = min(len(ref), 40 * RATE)  # each trial: 40 s of the echo, the phrase planted inside it
    for name, (clip, want) in phrases.items():
        voiced = rms(clip[np.abs(clip) > 0.01])
        for ser in SERS:
            hits = {"none": 0, "aec": 0}
            for _ in range(trials):
                first = int(rng.integers(0, max(1, len(ref) - span)))
                at = int(rng.integers(5 * RATE, span - len(clip) - RATE))
                mic = echo[first : first + span].copy()
                mic[at : at + len(clip)] += clip * (echo_level * 10 ** (ser / 20) / voiced)
                for kind, audio in (("none", mic), ("aec", cancel_echo(mic, ref[first : first + span]))):
                    found = detect(wake, audio)
                    ok = any((d.kind == "wake") if want == "wake" else d.label == "sorrow" for d in found)
                    hits[kind] += ok
            result["recall"][f"{name} @ {ser:+g} dB"] = {k: v / trials for k, v in hits.items()}
            print(name, ser, hits, file=sys.stderr, flush=True)
    return result


def sorrow_end_in_clip() -> float:
    """Where SORROW ends in the first 3.5 s of the clip: the timed keyword end on the clean clip."""
    wake = make_spotter()
    clip = load_clip(SORROW_CLIP)[: int(3.5 * RATE)]
    hits = [d for d in detect(wake, np.concatenate([clip, np.zeros(RATE, np.float32)])) if d.label == "sorrow"]
    return hits[0].t_end


def live(runs: int) -> dict:
    from assistant import pipeline
    from assistant.audio.ring import AudioRing
    from assistant.daemon import Daemon, make_executor
    from assistant.events import Interrupted, StateChange
    from assistant.llm.chat import Conversation
    from assistant.llm.tokenizer import Tokenizer
    from assistant.reply.sinks import Speech
    from assistant.reply.tts import EspeakTts
    from assistant.settings import TtsSettings, load_settings
    from bench.soak import export_tiny_llm

    sorrow = load_clip(SORROW_CLIP)[: int(3.5 * RATE)]
    sorrow_end = sorrow_end_in_clip()
    head = load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)]
    question = load_clip(AUDIO / "en" / "picovoice-leopard-test.wav")
    room = Room(delay_s=0.05, gain_db=-26.0)
    voice = rms(EspeakTts(TtsSettings(engine="espeak")).synthesize("This is how the assistant sounds.")[0])
    gain = voice * room.energy_gain() * 10 ** (20 / 20) / rms(sorrow[np.abs(sorrow) > 0.01])
    times: list[float] = []
    after_detection: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        llm = export_tiny_llm(Path(tmp))
        kw = Path(tmp) / "kw.txt"
        kw.write_text("FELLOW AMERICANS\n", encoding="utf-8")
        settings = load_settings(None, {"wake.keywords_file": kw, "wake.model_dir": KWS_EN,
                                        "wake.stop_phrases": ["SORROW @stop"], "asr.model_dir": KWS_EN,
                                        "llm.model_dir": llm, "llm.max_new_tokens": 40, "llm.threads": 1})
        wake = pipeline.build_wake(settings, pipeline.load_keyword_list(settings))
        asr = pipeline.build_asr(settings)
        model = pipeline.build_chat(settings).model
        for run in range(runs):
            loop = EchoLoop(room)
            source = LiveSource(loop, 60.0)
            output = LoopbackOutput(Path(tmp) / f"spoken{run}.wav", loop)
            speech = Speech(EspeakTts(TtsSettings(engine="espeak")), output)
            at = source.plant(head, 0.5)[1]
            source.plant(question, at)
            planted: list[float] = []
            cut: list[Interrupted] = []

            def emit(event, source=source, planted=planted, cut=cut) -> None:
                if isinstance(event, StateChange) and event.state == "speaking" and not planted:
                    planted.append(source.plant(sorrow, source.t + 0.5 + 0.3 * len(times), gain)[0])
                if isinstance(event, Interrupted):
                    cut.append(event)
                    source.end = source.t + 1.5

            executor = make_executor()
            wake.reset()
            daemon = Daemon(settings, wake=wake, asr=asr, chat=Conversation(model, Tokenizer.from_dir(llm)),
                            ring=AudioRing(settings.audio.ring_s), emit=emit, executor=executor, speech=speech,
                            live=True)
            try:
                asyncio.run(asyncio.wait_for(daemon.run(source), 180))
            finally:
                executor.shutdown(wait=True)
                speech.close()
            if planted and cut and output.last_write_t is not None:
                times.append((output.last_write_t - (planted[0] + sorrow_end)) * 1000)
                after_detection.append((output.last_write_t - cut[0].t) * 1000)
            print(f"live run {run}: planted {planted}, cut {[c.t for c in cut]}, last write "
                  f"{output.last_write_t}, stop-to-silence {times[-1] if times else None} ms",
                  file=sys.stderr, flush=True)
    return {"stop_to_silence_ms": times, "median_ms": statistics.median(times) if times else None,
            "detection_to_silence_ms": after_detection, "sorrow_end_s": sorrow_end,
            "stopped": f"{len(times)}/{runs}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of the assistant's own speech")
    parser.add_argument("--trials", type=int, default=6, help="planted phrases per phrase and ratio")
    parser.add_argument("--live", type=int, default=5, help="real-time daemon runs for stop-to-silence")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = offline(args.minutes, args.trials)
    print(json.dumps(report), file=sys.stderr, flush=True)
    if args.live:
        report["live"] = live(args.live)
    if args.json:
        print(json.dumps(report))
        return 0
    print(describe_cpu())
    print(f"own speech: {report['own_speech_min']:.1f} min through the room (50 ms, -6 dB, RT60 0.25 s)")
    print(f"speex AEC: echo reduced by {report['erle_db']:.1f} dB, {report['aec_rtf']:.3f} x real time")
    print(f"self-wakes per hour of own speech: without canceller {report['self_wakes_per_h']['none']:.1f}, "
          f"with {report['self_wakes_per_h']['aec']:.1f}")
    print(f"{'barge-in recall':38} {'no AEC':>7} {'AEC':>7}")
    for name, r in report["recall"].items():
        print(f"{name:38} {r['none']:7.0%} {r['aec']:7.0%}")
    if "live" in report:
        lv = report["live"]
        print(f"stop-to-silence (live daemon, no AEC, SORROW at +20 dB): median {lv['median_ms']} ms over "
              f"{lv['stopped']} runs: {[round(t) for t in lv['stop_to_silence_ms']]}; of which detection -> "
              f"silence {[round(t) for t in lv['detection_to_silence_ms']]} ms (SORROW ends {lv['sorrow_end_s']:.2f} s "
              "into its clip)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
