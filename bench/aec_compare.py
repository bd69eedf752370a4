"""Which echo canceller: Speex's MDF (speexdsp) against WebRTC's AEC3 (pywebrtc-audio), offline, same material.

The assistant's own speech (espeak-ng reading OpenBookQA answers, --minutes of it) through bench/bargein.py's
room (50 ms, -6 dB, RT60 0.25 s), each canceller given the exact reference in 10 ms frames:
1. echo removed (ERLE) over the first 5 s (how fast it adapts) and after, and CPU (fraction of one core);
2. what barge-in needs: the real wake phrase and SORROW planted over the echo at -10/-5/0/+5 dB speech-to-echo,
   --trials times each, through the canceller into the daemon's spotter (recall);
3. the user alone while our voice plays but none of it reaches the microphone: how much of the user's phrase
   survives a canceller that suppresses whatever coincides with the reference (recall again).

    .venv/bin/python -m bench.aec_compare [--minutes 1] [--trials 4]    # pip install speexdsp pywebrtc-audio
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.bargein import RATE, ROOM, SERS, SORROW_CLIP, cancel_echo, detect, make_spotter
from bench.stop_phrases import espeak, replies
from speechdata.assets import AUDIO
from speechdata.audio import load_clip
from speechdata.echo_room import rms


def webrtc_aec3(mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import pywebrtc_audio

    ec = pywebrtc_audio.EchoCanceller(RATE, 1)
    out = np.zeros_like(mic)
    for i in range(0, len(mic) - 159, 160):
        out[i : i + 160] = ec.process(mic[i : i + 160].copy(), ref[i : i + 160].copy())
    return out


CANCELLERS = {"speex": cancel_echo, "webrtc": webrtc_aec3}


def installed() -> dict:
    found = {}
    for name, module in (("speex", "speexdsp"), ("webrtc", "pywebrtc_audio")):
        try:
            __import__(module)
        except ImportError:
            print(f"{name}: {module} not installed, skipped", file=sys.stderr)
            continue
        found[name] = CANCELLERS[name]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of the assistant's own speech")
    parser.add_argument("--trials", type=int, default=4, help="planted phrases per phrase and ratio")
    args = parser.parse_args()
    cancellers = installed()
    texts = replies("en", 200)
    speech: list[np.ndarray] = []
    while sum(len(s) for s in speech) < args.minutes * 60 * RATE and texts:
        speech += [espeak(texts.pop(0), "en"), np.zeros(RATE // 3, np.float32)]
    ref = np.concatenate(speech)
    echo = np.convolve(ref, ROOM.impulse_response())[: len(ref)].astype(np.float32)
    head = 5 * RATE
    print(f"own speech {len(ref) / RATE / 60:.1f} min through the room (50 ms, -6 dB, RT60 0.25 s)")
    for name, cancel in cancellers.items():
        started = time.process_time()
        out = cancel(echo, ref)
        cpu = (time.process_time() - started) / (len(ref) / RATE)
        first = 20 * np.log10(rms(echo[:head]) / rms(out[:head]))
        after = 20 * np.log10(rms(echo[head:]) / rms(out[head:]))
        print(f"{name:7} echo removed: first 5 s {first:5.1f} dB, after {after:5.1f} dB; {cpu:.1%} of a core")
    wake = make_spotter()
    phrases = {"wake": load_clip(AUDIO / "en" / "whisper-jfk.flac")[: int(3.0 * RATE)],
               "sorrow": load_clip(SORROW_CLIP)[: int(3.5 * RATE)]}
    echo_level = rms(echo[np.abs(echo) > 0.01])
    rng = np.random.default_rng(0)
    span = min(len(ref), 30 * RATE)
    kinds = ["none", *cancellers, *(f"{n} (user alone)" for n in cancellers)]
    print(f"{'recall':22}" + "".join(f"{k:>22}" for k in kinds))
    for name, clip in phrases.items():
        voiced = rms(clip[np.abs(clip) > 0.01])
        for ser in SERS:
            hits = dict.fromkeys(kinds, 0)
            for _ in range(args.trials):
                first = int(rng.integers(0, max(1, len(ref) - span)))
                at = int(rng.integers(5 * RATE, span - len(clip) - RATE))
                user = np.zeros(span, np.float32)
                user[at : at + len(clip)] = clip * (echo_level * 10 ** (ser / 20) / voiced)
                mic, far = echo[first : first + span] + user, ref[first : first + span]
                audio = {"none": mic}
                for cname, cancel in cancellers.items():
                    audio[cname] = cancel(mic, far)
                    audio[f"{cname} (user alone)"] = cancel(user, far)
                for kind, x in audio.items():
                    found = detect(wake, x)
                    hits[kind] += any((d.kind == "wake") if name == "wake" else d.label == "sorrow" for d in found)
            print(f"{name + f' @ {ser:+g} dB':22}" + "".join(f"{hits[k] / args.trials:>22.0%}" for k in kinds),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
