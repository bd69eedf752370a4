"""Barge-in without an echo canceller: the stop phrases' trigger threshold while a reply is live, swept.

Without a canceller the assistant's own voice fires the default STOP ~30 times per hour of its speech
(BENCHMARKS.md, barge-in); the fallback raises the stop phrases' threshold while a reply is live
(wake.speaking_threshold). This chooses that threshold by measuring, all in one process, the same audio for
every threshold:

1. false alarms: the barge-in spotter the daemon runs while a reply is live (4 staggered streams, 0 trailing
   blanks, wake word FELLOW AMERICANS, the default stop phrases + SORROW) over --minutes of the assistant's own
   speech (espeak-ng reading OpenBookQA answers, as bench/bargein.py) through bench/bargein.py's room (50 ms,
   -6 dB, RT60 0.25 s), no canceller. Every detection is a false alarm; one whose phrase is in the reply being
   spoken is also counted apart (the daemon's text check would drop it). Counted twice: over the whole run
   as one stream, and over each reply alone from fresh streams (as the daemon hears a reply: its barge-in
   streams restart with each reply), which puts the words at other chunk phases and decoder states;
2. recall over the echo, no canceller: the real JFK wake phrase and the real SORROW (LibriSpeech; the stand-in
   stop phrase, as in bench/bargein.py) planted --trials times per speech-to-echo ratio into 12 s stretches of
   that echo; a hit is the planted kind reported between the phrase's start and 1.5 s after its end. Any
   detection outside that window is a false alarm on the echo too, at other chunk phases than run 1's (each
   stretch starts fresh streams), so those stretches are a second false-alarm count;
3. espeak-ng saying each default stop phrase alone ("Stop.", ...), clean: heard or not.

    .venv/bin/python -m bench.stop_threshold [--minutes 8] [--trials 8] [--thresholds 0.35 0.45 0.55 0.65]
                                             [--sers 20 10 5 0] [--json]

The first row is the default (the stop phrases' own threshold, wake.keywords_threshold), the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from bench.bargein import ROOM, SORROW_CLIP, detect, make_spotter
from bench.cpu import describe_cpu
from bench.stop_phrases import espeak, replies
from speechdata.assets import AUDIO
from speechdata.audio import load_clip
from speechdata.echo_room import rms

RATE = 16000
SPAN_S = 12.0  # each recall trial: this much echo with the phrase planted inside it
GAP_S = 1.0 / 3  # silence between replies
STREAMS = 4  # wake.barge_in_streams default
ALONE = ("Stop.", "Stop talking.", "Never mind.")


def own_speech(minutes: float) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """espeak-ng reading answers until `minutes` of audio: the signal and (start s, end s, text) per reply."""
    texts = replies("en", 400)
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float, str]] = []
    at = 0
    while at < minutes * 60 * RATE and texts:
        text = texts.pop(0)
        audio = espeak(text, "en")
        spans.append((at / RATE, (at + len(audio)) / RATE, text))
        pieces += [audio, np.zeros(int(GAP_S * RATE), np.float32)]
        at += len(audio) + int(GAP_S * RATE)
    return np.concatenate(pieces), spans


def reply_at(spans: list[tuple[float, float, str]], t: float) -> int:
    """Index of the reply being said (or just said) at time t."""
    return max((i for i, (start, _, _) in enumerate(spans) if start <= t), default=0)


def in_text(label: str, text: str) -> bool:
    words = "".join(ch if ch.isalnum() or ch == "'" else " " for ch in text.upper()).split()
    phrase = label.upper().split()
    return any(words[i : i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))


def mixes(echo: np.ndarray, sers: list[float], trials: int) -> list[dict]:
    """The planted trials, made once and fed to every threshold's spotter."""
    phrases = {"wake": load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)],
               "stop": load_clip(SORROW_CLIP)[: int(3.5 * RATE)]}
    echo_level = rms(echo[np.abs(echo) > 0.01])
    rng = np.random.default_rng(0)
    span = int(SPAN_S * RATE)
    out = []
    for kind, clip in phrases.items():
        voiced = rms(clip[np.abs(clip) > 0.01])
        for ser in sers:
            for _ in range(trials):
                first = int(rng.integers(0, len(echo) - span))
                at = int(rng.integers(3 * RATE, span - len(clip) - RATE))
                mic = echo[first : first + span].copy()
                mic[at : at + len(clip)] += clip * (echo_level * 10 ** (ser / 20) / voiced)
                out.append({"kind": kind, "ser": ser, "mic": mic, "start": at / RATE,
                            "end": (at + len(clip)) / RATE})
    return out


def hit(detection, trial: dict) -> bool:
    right = detection.kind == "wake" if trial["kind"] == "wake" else detection.label == "sorrow"
    return right and trial["start"] <= detection.t <= trial["end"] + 1.5


def sweep(minutes: float, trials: int, thresholds: list[float | None], sers: list[float]) -> dict:
    from assistant.wake.spotter import barge_in_spotter

    started = time.perf_counter()
    ref, spans = own_speech(minutes)
    echo = np.convolve(ref, ROOM.impulse_response())[: len(ref)].astype(np.float32)
    ir = ROOM.impulse_response()
    # Each reply alone, as the daemon hears it: its barge-in streams start fresh when a reply starts.
    alone_replies = [np.convolve(np.concatenate([ref[int(a * RATE) : int(b * RATE)], np.zeros(RATE, np.float32)]),
                                 ir)[: int((b - a + 1) * RATE)].astype(np.float32) for a, b, _ in spans]
    trials_audio = mixes(echo, sers, trials)
    alone = {text: np.concatenate([np.zeros(RATE // 2, np.float32), espeak(text, "en"), np.zeros(RATE, np.float32)])
             for text in ALONE}
    print(f"audio ready in {time.perf_counter() - started:.0f} s: {len(ref) / RATE / 60:.1f} min own speech, "
          f"{len(spans)} replies, {len(trials_audio)} trials", file=sys.stderr, flush=True)
    base = make_spotter().wake
    hours = len(ref) / RATE / 3600
    rows = []
    for threshold in thresholds:
        t0 = time.perf_counter()
        spotter = barge_in_spotter(base, STREAMS, 0, threshold)
        found = detect(spotter, echo)
        false = [{"t": round(d.t, 2), "label": d.label, "kind": d.kind, "reply": reply_at(spans, d.t),
                  "in_text": in_text(d.keyword_text or d.label, spans[reply_at(spans, d.t)][2])} for d in found]
        fresh = [{"reply": i, "label": d.label, "t": round(d.t, 2), "in_text": in_text(d.keyword_text or d.label,
                                                                               spans[i][2])}
                 for i, audio in enumerate(alone_replies) for d in detect(spotter, audio)]
        recall: dict[str, int] = {}
        other: list[dict] = []  # detections in the mixes that are not the planted phrase
        for trial in trials_audio:
            got = detect(spotter, trial["mic"])
            key = f"{trial['kind']} {trial['ser']:+g} dB"
            recall[key] = recall.get(key, 0) + any(hit(d, trial) for d in got)
            # outside the planted phrase (and its 1.5 s report window): a false alarm on our echo, at another
            # chunk phase than the long run's (each stretch starts a fresh stream)
            other += [{"label": d.label, "kind": d.kind, "trial": key, "t": round(d.t, 2),
                       "on_echo": not trial["start"] <= d.t <= trial["end"] + 1.5}
                      for d in got if not hit(d, trial)]
        heard = {text: [d.label for d in detect(spotter, audio)] for text, audio in alone.items()}
        row = {"threshold": threshold, "stop_thresholds": spotter.wake.thresholds("stop"),
               "false_alarms": false, "false_per_h": len(false) / hours,
               "false_not_in_text_per_h": sum(not f["in_text"] for f in false) / hours,
               "recall": {k: v / trials for k, v in recall.items()}, "other_in_mixes": other,
               "false_in_mixes": sum(o["on_echo"] for o in other), "false_fresh": fresh,
               "alone": heard, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    mix_min = sum(SPAN_S - (t["end"] - t["start"]) - 1.5 for t in trials_audio) / 60  # echo alone in the mixes
    return {"own_speech_min": len(ref) / RATE / 60, "hours": hours, "mix_echo_min": mix_min, "replies": len(spans),
            "trials": trials, "sers": sers, "rows": rows,
            "false_texts": {str(f["reply"]): spans[f["reply"]][2]
                            for row in rows for f in row["false_alarms"] + row["false_fresh"]}}


def print_table(report: dict) -> None:
    print(f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}; own speech "
          f"{report['own_speech_min']:.1f} min ({report['replies']} replies) through the room (50 ms, -6 dB, "
          f"RT60 0.25 s), no canceller, barge-in spotter ({STREAMS} streams, 0 blanks); {report['trials']} trials each")
    sers = " / ".join(f"{s:+g}" for s in report['sers'])
    print(f"| stop threshold | false alarms on own speech, one stream run (per h) | the same, each reply from a "
          f"fresh stream (per h) | false alarms on the "
          f"echo of the mixes ({report['mix_echo_min']:.1f} min) | recall SORROW {sers} dB | recall wake {sers} dB | "
          f"espeak alone: {' / '.join(ALONE)} |")
    print("|---|---|---|---|---|---|---|")
    for row in report["rows"]:
        name = "default (own)" if row["threshold"] is None else f"{row['threshold']:.2f}"
        labels = ", ".join(sorted({f["label"] for f in row["false_alarms"]})) or "-"
        stop = " / ".join(f"{row['recall'][f'stop {s:+g} dB']:.0%}" for s in report['sers'])
        wake = " / ".join(f"{row['recall'][f'wake {s:+g} dB']:.0%}" for s in report['sers'])
        alone = " / ".join("yes" if row["alone"][t] else "no" for t in ALONE)
        mixed = ", ".join(sorted({o["label"] for o in row["other_in_mixes"] if o["on_echo"]})) or "-"
        fresh = row["false_fresh"]
        print(f"| {name} | {len(row['false_alarms'])} ({labels}): {row['false_per_h']:.1f}/h | {len(fresh)} "
              f"({', '.join(sorted({f['label'] for f in fresh})) or '-'}): {len(fresh) / report['hours']:.1f}/h | "
              f"{row['false_in_mixes']} ({mixed}) | {stop} | {wake} | {alone} |")
    for row in report["rows"]:
        own = [(f["t"], f["label"], f["reply"]) for f in row["false_alarms"]]
        mixed = [(o["trial"], o["t"], o["label"], o["on_echo"]) for o in row["other_in_mixes"]]
        fresh = [(f["reply"], f["t"], f["label"], f["in_text"]) for f in row["false_fresh"]]
        print(f"threshold {row['threshold']}: own speech {own}; replies alone {fresh}; in the mixes {mixed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes of the assistant's own speech")
    parser.add_argument("--trials", type=int, default=8, help="planted phrases per phrase and ratio")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.35, 0.45, 0.55, 0.65],
                        help="raised stop-phrase thresholds to try, beside the default")
    parser.add_argument("--sers", type=float, nargs="+", default=[20.0, 10.0, 5.0, 0.0],
                        help="speech-to-echo ratios (dB) of the planted phrases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    report = sweep(args.minutes, args.trials, [None, *args.thresholds], args.sers)
    report["load_before"], report["load_after"] = load_before, os.getloadavg()
    if args.json:
        print(json.dumps(report))
        return 0
    print(describe_cpu())
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
