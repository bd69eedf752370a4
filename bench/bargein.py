"""Barge-in: the assistant's own voice through a simulated room, with and without an acoustic echo canceller.

Material: espeak-ng reading answers (OpenBookQA questions and answers; the assistant's own speech, --minutes of
it), fed back through tests/echo_room.Room (50 ms, -6 dB, synthetic reverberant tail). The spotter is the one
the daemon runs (gated, en KWS, wake word FELLOW AMERICANS, the default stop phrases plus SORROW), and beside
it, without the canceller, the barge-in spotter it runs while a reply is live (4 staggered streams, 0 blanks).
The canceller is speexdsp's (the Speex MDF echo canceller, Debian's libspeexdsp through the `speexdsp` binding,
10 ms frames, 256 ms filter) given the exact reference, as the daemon would get it from its own output.

1. self-wakes per hour of the assistant's own speech: any detection on the echo alone;
2. barge-in recall at speech-to-echo ratios -10, -5, 0, +5 dB: the real JFK wake phrase ("And so, my fellow
   Americans,") and the real SORROW (LibriSpeech clip) planted over the echo at --trials positions;
3. stop-to-silence (--live N): the daemon on a real-time source (speechdata/echo_room.LiveSource, audio.block_ms),
   SORROW planted once the assistant speaks; the end of SORROW in the input to the last TTS sample the paced
   WAV sink wrote, both on the input's audio clock. Without the canceller, at +20 dB so the stop is heard.
   Run twice in the same session: the old barge-in path (wake.barge_in_streams 0: the wake word's own stream)
   and the configured one (staggered streams, BargeInSpotter), N runs each. The end of SORROW is where its
   sound ends (`acoustic_end`); the figure against the spotter's token-time estimate of the end (0.2 s
   earlier, what earlier versions of this table used) is printed beside it. Without a canceller the daemon's
   barge-in spotter holds stop phrases to wake.speaking_threshold; --with-aec times the configured spotter
   once more with the canceller on (stop phrases at their own threshold), as installs with speexdsp run.
4. the canceller live in the daemon (--aec-live PLANTS, `live_aec`): self-wakes per hour and recall at each ratio
   with tts.echo_cancel off and on, the daemon fed by a real-time source through the room, the canceller's
   reference coming from the paced sink; and the echo it removes there (ERLE against the room's echo).

    .venv/bin/python -m bench.bargein [--minutes 3] [--trials 6] [--live 5] [--aec-live 6] [--live-only]
                                      [--streams N ...] [--block-ms MS ...] [--with-aec] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
    from assistant.wake.spotter import barge_in_spotter

    wake = make_spotter()
    fast = barge_in_spotter(wake.wake, 4, 0)  # the daemon's default while a reply is live
    hours = len(ref) / RATE / 3600
    result = {
        "own_speech_min": len(ref) / RATE / 60,
        "self_wakes_per_h": {"none": len(detect(wake, echo)) / hours, "aec": len(detect(wake, cleaned)) / hours,
                             "barge-in spotter, none": len(detect(fast, echo)) / hours},
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
            hits = {"none": 0, "aec": 0, "barge-in spotter, none": 0}
            for _ in range(trials):
                first = int(rng.integers(0, max(1, len(ref) - span)))
                at = int(rng.integers(5 * RATE, span - len(clip) - RATE))
                mic = echo[first : first + span].copy()
                mic[at : at + len(clip)] += clip * (echo_level * 10 ** (ser / 20) / voiced)
                for kind, audio, spotter in (("none", mic, wake),
                                             ("aec", cancel_echo(mic, ref[first : first + span]), wake),
                                             ("barge-in spotter, none", mic, fast)):
                    found = detect(spotter, audio)
                    ok = any((d.kind == "wake") if want == "wake" else d.label == "sorrow" for d in found)
                    hits[kind] += ok
            result["recall"][f"{name} @ {ser:+g} dB"] = {k: v / trials for k, v in hits.items()}
            print(name, ser, hits, file=sys.stderr, flush=True)
    return result


def sorrow_end_in_clip() -> tuple[float, float]:
    """Where SORROW ends in the first 3.5 s of the clip: (its sound, the spotter's token-time estimate)."""
    from assistant.wake.spotter import TOKEN_DELAY_S

    wake = make_spotter()
    clip = load_clip(SORROW_CLIP)[: int(3.5 * RATE)]
    hits = [d for d in detect(wake, np.concatenate([clip, np.zeros(RATE, np.float32)])) if d.label == "sorrow"]
    return acoustic_end(clip, hits[0].t_end + TOKEN_DELAY_S), hits[0].t_end


def acoustic_end(clip: np.ndarray, last_token_s: float) -> float:
    """Where a word whose last token the spotter stamped at `last_token_s` stops sounding: the start of the
    first 10 ms frame after the stamp that is 10 dB below the loudest frame of the 0.5 s before it.

    The token-time estimate (stamp - TOKEN_DELAY_S) errs early on purpose, so the ASR never loses the next
    word. On this clip it says 1.48 s; SORROW's last vowel goes on at -18..-24 dBFS to 1.70 s, then the level
    drops to -29..-30 dBFS before the short unstressed OF (1.74-1.82 s) and HIS (1.90 s; the recogniser's
    stamps: ROW 1.68 s, HIS 2.00 s). Cut at 1.48 s and padded with silence the clip still fires SORROW: the
    spotter needs no more than that, but a person is still saying the word for another 0.2 s."""
    frame = RATE // 100
    level = [10 * np.log10(np.mean(np.square(clip[i : i + frame], dtype=np.float64)) + 1e-10)
             for i in range(0, len(clip) - frame, frame)]
    at = int(last_token_s * 100)
    peak = max(level[max(0, at - 50) : at + 1])
    for i in range(at, len(level)):
        if level[i] <= peak - 10.0:
            return i / 100
    return last_token_s


def live(runs: int, overrides: dict | None = None, block_ms: int | None = None) -> dict:
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
    sorrow_end, sorrow_estimate = sorrow_end_in_clip()
    head = load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)]
    question = load_clip(AUDIO / "en" / "picovoice-leopard-test.wav")
    room = Room(delay_s=0.05, gain_db=-26.0)
    voice = rms(EspeakTts(TtsSettings(engine="espeak")).synthesize("This is how the assistant sounds.")[0])
    gain = voice * room.energy_gain() * 10 ** (20 / 20) / rms(sorrow[np.abs(sorrow) > 0.01])
    times: list[float] = []
    from_estimate: list[float] = []
    after_detection: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        llm = export_tiny_llm(Path(tmp))
        kw = Path(tmp) / "kw.txt"
        kw.write_text("FELLOW AMERICANS\n", encoding="utf-8")
        settings = load_settings(None, {"wake.keywords_file": kw, "wake.model_dir": KWS_EN,
                                        "wake.stop_phrases": ["SORROW @stop"], "asr.model_dir": KWS_EN,
                                        "llm.model_dir": llm, "llm.max_new_tokens": 40, "llm.threads": 1,
                                        "tts.echo_cancel": False, **(overrides or {})})
        block_ms = block_ms or settings.audio.block_ms  # None: the configured default, as a microphone gets
        wake = pipeline.build_wake(settings, pipeline.load_keyword_list(settings))
        asr = pipeline.build_asr(settings)
        model = pipeline.build_chat(settings).model
        for run in range(runs):
            loop = EchoLoop(room)
            source = LiveSource(loop, 60.0, block=RATE * block_ms // 1000)
            output = LoopbackOutput(Path(tmp) / f"spoken{run}.wav", loop)
            speech = Speech(EspeakTts(TtsSettings(engine="espeak")), output)
            at = source.plant(head, 0.5)[1]
            source.plant(question, at)
            planted: list[float] = []
            cut: list[Interrupted] = []

            def emit(event, source=source, planted=planted, cut=cut, run=run) -> None:
                if isinstance(event, StateChange) and event.state == "speaking" and not planted:
                    planted.append(source.plant(sorrow, source.t + 0.5 + 0.07 * run, gain)[0])
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
                from_estimate.append((output.last_write_t - (planted[0] + sorrow_estimate)) * 1000)
                after_detection.append((output.last_write_t - cut[0].t) * 1000)
            print(f"live run {run}: planted {planted}, cut {[c.t for c in cut]}, last write "
                  f"{output.last_write_t}, stop-to-silence {times[-1] if cut and times else None} ms",
                  file=sys.stderr, flush=True)
    return {"stop_to_silence_ms": times, "median_ms": statistics.median(times) if times else None,
            "from_estimate_ms": from_estimate,
            "median_from_estimate_ms": statistics.median(from_estimate) if from_estimate else None,
            "detection_to_silence_ms": after_detection, "sorrow_end_s": sorrow_end,
            "sorrow_end_estimate_s": sorrow_estimate, "stopped": f"{len(times)}/{runs}",
            "settings": {**(overrides or {}), "audio block ms": block_ms}}


def echo_removed(cleaned: list[tuple[float, np.ndarray]], source: LiveSource, start: float, end: float) -> float:
    """ERLE of the live canceller: the room's echo against the canceller's output, from `start` to `end` where
    no user audio was planted (our own speech alone)."""
    n = int(end * RATE)
    out = np.zeros(n, np.float32)
    done = np.zeros(n, bool)
    for t, y in cleaned:
        i = int(round(t * RATE))
        if i < n:
            out[i : i + len(y)] = y[: n - i]
            done[i : i + len(y)] = True
    mask = done & (source.user[:n] == 0)
    mask[: int(start * RATE)] = False
    echo = source.loop.echo[:n]
    return float(10 * np.log10(np.sum(np.square(echo[mask], dtype=np.float64)) /
                               max(np.sum(np.square(out[mask], dtype=np.float64)), 1e-12)))


PLANT_EVERY_S = 6.0  # live recall: a phrase every this many seconds of the reply, from ADAPT_S on
ADAPT_S = 8.0  # seconds of our speech before the first phrase (the canceller starts from nothing each run)


def live_aec(sers: tuple[float, ...], plants: int) -> dict:
    """Recall and self-wakes with the daemon's own canceller (tts.echo_cancel) on and off, live.

    One real-time daemon run per ratio and condition: the assistant answers (the tiny MiniMind, a long
    reply spoken by espeak-ng through the loud room, ROOM), and from ADAPT_S into its speech the real wake
    phrase and SORROW are planted alternately every PLANT_EVERY_S at the ratio. The daemon runs unchanged
    except that a barge-in is recorded instead of acted on (so one reply carries several trials): the
    spotter, the canceller and its reference from the paced sink are the live ones. A hit: the planted kind
    detected between the phrase's start and 1.5 s after its end. A self-wake: any other detection while
    we speak (or in the 0.5 s after)."""
    from assistant import pipeline
    from assistant.audio.ring import AudioRing
    from assistant.daemon import Daemon, make_executor
    from assistant.events import StateChange
    from assistant.llm.chat import Conversation
    from assistant.llm.tokenizer import Tokenizer
    from assistant.reply.sinks import Speech
    from assistant.reply.tts import EspeakTts
    from assistant.settings import TtsSettings, load_settings
    from bench.soak import export_tiny_llm

    clips = {"wake": load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)],
             "stop": load_clip(SORROW_CLIP)[: int(3.5 * RATE)]}
    question = load_clip(AUDIO / "en" / "picovoice-leopard-test.wav")
    voice = rms(EspeakTts(TtsSettings(engine="espeak")).synthesize("This is how the assistant sounds.")[0])
    echo_level = voice * ROOM.energy_gain()
    result: dict = {"room": "50 ms, -6 dB, RT60 0.25 s", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        llm = export_tiny_llm(Path(tmp))
        kw = Path(tmp) / "kw.txt"
        kw.write_text("FELLOW AMERICANS\n", encoding="utf-8")
        base = load_settings(None, {"wake.keywords_file": kw, "wake.model_dir": KWS_EN,
                                    "wake.stop_phrases": ["SORROW @stop"], "asr.model_dir": KWS_EN,
                                    "llm.model_dir": llm, "llm.max_new_tokens": 120, "llm.threads": 1})
        wake = pipeline.build_wake(base, pipeline.load_keyword_list(base))
        asr = pipeline.build_asr(base)
        model = pipeline.build_chat(base).model
        for aec in (False, True):
            settings = dataclasses.replace(base, tts=dataclasses.replace(base.tts, echo_cancel=aec))
            for ser in sers:
                loop = EchoLoop(ROOM)
                source = LiveSource(loop, ADAPT_S + plants * PLANT_EVERY_S + 30.0)
                output = LoopbackOutput(Path(tmp) / "spoken.wav", loop)
                speech = Speech(EspeakTts(TtsSettings(engine="espeak")), output)
                at = source.plant(clips["wake"], 0.5)[1]
                source.plant(question, at)
                planted: list[tuple[str, float, float]] = []
                spoken: list[float] = []  # input times: speaking started, ended
                hits: list[tuple[str, float]] = []

                def emit(event, source=source, planted=planted, spoken=spoken, ser=ser) -> None:
                    if isinstance(event, StateChange) and event.state == "speaking" and not spoken:
                        spoken.append(source.t)
                        for i in range(plants):
                            kind = ("wake", "stop")[i % 2]
                            clip = clips[kind]
                            gain = echo_level * 10 ** (ser / 20) / rms(clip[np.abs(clip) > 0.01])
                            start, end = source.plant(clip, source.t + ADAPT_S + i * PLANT_EVERY_S, gain)
                            planted.append((kind, start, end))
                    if isinstance(event, StateChange) and event.previous == "speaking" and len(spoken) == 1:
                        spoken.append(event.t)
                        source.end = event.t + 1.0

                executor = make_executor()
                wake.reset()
                daemon = Daemon(settings, wake=wake, asr=asr, chat=Conversation(model, Tokenizer.from_dir(llm)),
                                ring=AudioRing(settings.audio.ring_s), emit=emit, executor=executor,
                                speech=speech, live=True)

                async def record(detection, hits=hits) -> None:  # a barge-in recorded, not acted on
                    hits.append((getattr(detection, "kind", "wake"), detection.t))

                daemon._interrupt = record
                cleaned: list[tuple[float, np.ndarray]] = []  # the canceller's output, for its ERLE
                if daemon.aec is not None:
                    process = daemon.aec.process

                    def recording(chunk, process=process, cleaned=cleaned):
                        out = process(chunk)
                        cleaned.append((out.t, out.samples))
                        return out

                    daemon.aec.process = recording
                try:
                    asyncio.run(asyncio.wait_for(daemon.run(source), 300))
                finally:
                    executor.shutdown(wait=True)
                    speech.close()
                end = spoken[1] if len(spoken) > 1 else source.t
                inside = [p for p in planted if p[2] + 1.5 <= end]
                found = [any(k == kind and start <= t <= stop + 1.5 for k, t in hits) for kind, start, stop in inside]
                stray = [(k, t) for k, t in hits if spoken and spoken[0] <= t <= end + 0.5
                         and not any(start <= t <= stop + 1.5 for _, start, stop in planted)]
                run = {"aec": aec, "ser_db": ser, "speech_s": end - (spoken[0] if spoken else end),
                       "planted": len(inside), "heard": int(sum(found)), "self_wakes": len(stray),
                       "by_kind": {kind: f"{sum(f for f, p in zip(found, inside, strict=True) if p[0] == kind)}/"
                                         f"{sum(p[0] == kind for p in inside)}" for kind in clips},
                       "erle_db": echo_removed(cleaned, source, spoken[0] + ADAPT_S, end) if cleaned else None,
                       "late_ref_samples": daemon.aec.late_samples if daemon.aec is not None else None}
                result["runs"].append(run)
                print(f"live aec={aec} {ser:+g} dB: {run}", file=sys.stderr, flush=True)
    for aec in (False, True):
        runs = [r for r in result["runs"] if r["aec"] is aec]
        hours = sum(r["speech_s"] for r in runs) / 3600
        result["aec" if aec else "none"] = {
            "own_speech_min": hours * 60,
            "self_wakes_per_h": sum(r["self_wakes"] for r in runs) / hours if hours else None,
            "recall": {f"{r['ser_db']:+g} dB": (r["heard"] / r["planted"] if r["planted"] else None) for r in runs},
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of the assistant's own speech")
    parser.add_argument("--trials", type=int, default=6, help="planted phrases per phrase and ratio")
    parser.add_argument("--live", type=int, default=5, help="real-time daemon runs for stop-to-silence")
    parser.add_argument("--aec-live", type=int, default=0, metavar="PLANTS",
                        help="live daemon with its canceller on and off: PLANTS phrases per ratio and condition")
    parser.add_argument("--live-only", "--no-offline", dest="live_only", action="store_true",
                        help="skip the offline part (self-wakes, recall)")
    parser.add_argument("--streams", type=int, nargs="+", default=[],
                        help="wake.barge_in_streams values to time too (default: only the configured one)")
    parser.add_argument("--block-ms", type=int, nargs="+", default=[],
                        help="also time the configured spotter fed blocks this long (a microphone's audio.block_ms)")
    parser.add_argument("--with-aec", action="store_true",
                        help="also time the configured spotter with the daemon's canceller on (needs speexdsp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict = {}
    if not args.live_only:
        report = offline(args.minutes, args.trials)
        print(json.dumps(report), file=sys.stderr, flush=True)
    if args.aec_live:
        report["aec_live"] = live_aec(SERS, args.aec_live)
    if args.live:
        # The old path (the wake word's own stream) as the baseline, then the configured default, same session.
        report["live_baseline"] = live(args.live, {"wake.barge_in_streams": 0})
        report["live"] = live(args.live)
        for streams in args.streams:
            report[f"live_{streams}"] = live(args.live, {"wake.barge_in_streams": streams})
        for block_ms in args.block_ms:
            report[f"live_block{block_ms}"] = live(args.live, block_ms=block_ms)
        if args.with_aec:
            # The default install's path where speexdsp is there: the canceller on, the stop phrases at their
            # own threshold (without it they are raised while speaking: wake.speaking_threshold).
            report["live_with_aec"] = live(args.live, {"tts.echo_cancel": True})
    if args.json:
        print(json.dumps(report))
        return 0
    print(describe_cpu())
    if "aec_live" in report:
        lv = report["aec_live"]
        print("live daemon, its canceller (tts.echo_cancel) off / on, room 50 ms, -6 dB, RT60 0.25 s:")
        for kind in ("none", "aec"):
            print(f"  {kind:4}: {lv[kind]['own_speech_min']:.1f} min of own speech, self-wakes/h "
                  f"{lv[kind]['self_wakes_per_h']:.1f}, recall " +
                  ", ".join(f"{k} {'-' if v is None else f'{v:.0%}'}" for k, v in lv[kind]["recall"].items()))
        for run in lv["runs"]:
            erle = "-" if run["erle_db"] is None else f"{run['erle_db']:.1f} dB"
            print(f"  aec={run['aec']!s:5} {run['ser_db']:+3g} dB: heard {run['heard']}/{run['planted']} "
                  f"{run['by_kind']}, self-wakes {run['self_wakes']}, speech {run['speech_s']:.0f} s, "
                  f"echo removed after {ADAPT_S:g} s {erle}, late reference samples {run['late_ref_samples']}")
    if "recall" in report:
        print(f"own speech: {report['own_speech_min']:.1f} min through the room (50 ms, -6 dB, RT60 0.25 s)")
        print(f"speex AEC: echo reduced by {report['erle_db']:.1f} dB, {report['aec_rtf']:.3f} x real time")
        print(f"self-wakes per hour of own speech: without canceller {report['self_wakes_per_h']['none']:.1f}, "
              f"with {report['self_wakes_per_h']['aec']:.1f}; barge-in spotter (4 streams, 0 blanks) without "
              f"canceller {report['self_wakes_per_h']['barge-in spotter, none']:.1f}")
        print(f"{'barge-in recall':38} {'no AEC':>7} {'AEC':>7} {'4 streams, no AEC':>18}")
        for name, r in report["recall"].items():
            print(f"{name:38} {r['none']:7.0%} {r['aec']:7.0%} {r['barge-in spotter, none']:18.0%}")
    for key in [k for k in report if k.startswith("live")]:
        name = {"live_baseline": "baseline: wake word's own stream", "live": "configured",
                "live_with_aec": "configured, with the canceller"}.get(key, "")
        lv = report[key]
        aec = "AEC on" if lv["settings"].get("tts.echo_cancel") else "no AEC"
        print(f"stop-to-silence, {name} {lv['settings']} (live daemon, {aec}, SORROW at +20 dB): median "
              f"{lv['median_ms']} ms over {lv['stopped']} runs: {[round(t) for t in lv['stop_to_silence_ms']]}; "
              f"from the token-time estimate of the end: median {lv['median_from_estimate_ms']} ms; detection -> "
              f"silence {[round(t) for t in lv['detection_to_silence_ms']]} ms (SORROW ends "
              f"{lv['sorrow_end_s']:.2f} s into its clip, estimate {lv['sorrow_end_estimate_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
