"""Wake-word tuning: recall and false alarms per hour, default settings against tuned ones, per language.

Tuned from synthetic positives (espeak-ng, the `assistant keywords tune` default) and evaluated only on real
recordings never used for tuning: the shared clips in which each phrase is said (recall) and the shared clips in
which it is not (false alarms per hour). The baseline is the same keywords file as written, in the same run.

    python -m bench.keywords [--language en|zh|both] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.models.files import find_transducer
from assistant.wake import samples, search, tuning
from assistant.wake.keywords import load_tokens, parse_keywords
from bench.cpu import describe_cpu

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ASSISTANT_SHARED", REPO.parent / "shared")).resolve() / "assets"
AUDIO = ASSETS / "audio"
ZH_WAVS = ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile" / "test_wavs"

# phrase -> the shared recordings in which it is said (from audio/transcripts.tsv)
CASES = {
    "en": {
        "model": ASSETS / "kws" / "en-gigaspeech-3.3M-mobile",
        "phrases": {
            "FELLOW AMERICANS": ["en/whisper-jfk.flac"],
            "COUNTRY": ["en/whisper-jfk.flac"],
            "SORROW": ["en/wenet-librispeech-1995-1837-0001.wav"],
            "COTTON": ["en/wenet-librispeech-1995-1837-0001.wav"],
            "GOSPEL": ["en/picovoice-leopard-test.wav"],
            "NARRATIVE": ["en/lhotse-librispeech-2412-153948-0000.flac"],
        },
        "clips": sorted(p.relative_to(AUDIO).as_posix() for p in (AUDIO / "en").glob("*") if p.is_file()),
    },
    "zh": {
        "model": ASSETS / "kws" / "zh-wenetspeech-3.3M-mobile",
        "phrases": {
            "文森特卡索": ["kws:3.wav"], "法国": ["kws:3.wav"], "蒋友伯": ["kws:4.wav"], "女儿": ["kws:4.wav"],
            "周望军": ["kws:5.wav"], "落实": ["kws:5.wav"], "朱丽楠": ["kws:6.wav"], "见面会": ["kws:6.wav"],
            "豪猪": ["zh/porcupine-haozhu.wav"], "广州市": ["zh/wenet-aishell-BAC009S0724W0121.wav"],
            "欢迎大家": ["zh/funasr-asr_example.wav"],
        },
        "clips": [f"kws:{i}.wav" for i in range(7)] + sorted(
            p.relative_to(AUDIO).as_posix() for p in (AUDIO / "zh").glob("*") if p.is_file()
        ),
    },
}


def _path(name: str) -> Path:
    return ZH_WAVS / name[4:] if name.startswith("kws:") else AUDIO / name


def evaluate(model: Path, keywords_text: str, clips: list[tuning.Clip], said: dict[str, list[str]],
             threads: int) -> tuple[int, int, int, float]:
    """(found, positives, false alarms, hours of audio without that phrase), summed over the phrases."""
    files = find_transducer(model, "kws")
    keywords = parse_keywords(keywords_text, load_tokens(files.tokens, files.bpe_model))
    scanner = tuning.Scanner(files, keywords)
    hits = tuning.scan_all(scanner, clips, [tuning.AS_WRITTEN], workers=threads)[tuning.AS_WRITTEN]
    found = positives = false = 0
    hours = 0.0
    for phrase, where in said.items():
        label = "_".join(phrase.split())
        fired = {h.clip for h in hits if h.label in (phrase, label)}
        positives += len(where)
        found += sum(1 for name in where if name in fired)
        false += sum(1 for h in hits if h.label in (phrase, label) and h.clip not in where)
        hours += sum(c.seconds for c in clips if c.name not in where) / 3600
    return found, positives, false, hours


def run_language(language: str, threads: int) -> dict:
    case = CASES[language]
    clips = [tuning.Clip(name, samples.read_clip(_path(name)).samples) for name in case["clips"]]
    written = "".join(f"{phrase}\n" for phrase in case["phrases"])
    with tempfile.TemporaryDirectory() as work:
        source, tuned = Path(work) / "keywords.txt", Path(work) / "tuned.txt"
        source.write_text(written, encoding="utf-8")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "assistant", "keywords", "tune", str(source), "--kws-model",
               str(case["model"]), "--out", str(tuned), "--threads", str(threads), "--language", language]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        tune_s = time.monotonic() - started
        tuned_text = tuned.read_text(encoding="utf-8")
    default = evaluate(case["model"], written, clips, case["phrases"], threads)
    after = evaluate(case["model"], tuned_text, clips, case["phrases"], threads)
    return {"language": language, "keywords": len(case["phrases"]), "default": default, "tuned": after,
            "tune_s": tune_s, "tuned_text": tuned_text}


# ------------------------------------------------------------------------------------------------ timing
# The case: 5 keywords x 5 positives x 1 h of negatives.
TIMING_KEYWORDS = ("HEY COMPUTER", "GOOD MORNING", "OK ASSISTANT", "TURN ON THE LIGHTS", "STOP THE MUSIC")
TIMING_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-us+m3")


def _speak():
    from assistant.commands.keywords import _espeak

    return _espeak("en")


def timing_positives(folder: Path) -> int:
    """5 takes per keyword (espeak-ng, 5 voices, room noise at 20 dB) as LABEL-i.wav."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    phrases = {k: k.lower() for k in TIMING_KEYWORDS}
    clips = samples.synthetic_positives(phrases, _speak(), TIMING_VOICES, speeds=(1.0,), snrs_db=(20.0,))
    counts: dict[str, int] = {}
    for clip in clips:
        counts[clip.label] = counts.get(clip.label, 0) + 1
        sf.write(folder / f"{samples.label_key(clip.label)}-{counts[clip.label]}.wav", clip.samples, 16000)
    return len(clips)


def timing_negatives(folder: Path, minutes: float, seed: int = 0) -> str:
    """`minutes` of audio in 5-minute files: the shared real speech (en, zh, the zh KWS test clips) and the
    default negatives generator's speech and room tone (samples.synthetic_negatives), shuffled and remixed per
    round (gain +-6 dB, 0.3-1.5 s room-tone gaps, pink noise at 30/20/10 dB SNR) until long enough."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    real = [p for lang in ("en", "zh") for p in sorted((AUDIO / lang).glob("*")) if p.suffix in (".wav", ".flac")]
    real += sorted(ZH_WAVS.glob("*.wav"))
    pool = [samples.read_clip(p).samples for p in real]
    pool += [c.samples for c in samples.synthetic_negatives("en", _speak(), TIMING_VOICES[:4], seed=seed)]
    pool_s = sum(len(x) for x in pool) / 16000
    rng = np.random.default_rng(seed)
    target, written, part, buffer = int(minutes * 60 * 16000), 0, 0, []
    while written < target:
        for i in rng.permutation(len(pool)):
            gap = samples.pink_noise(rng.uniform(0.3, 1.5), -50, rng)
            speech = pool[i] * np.float32(10 ** (rng.uniform(-6, 6) / 20))
            noisy = samples.mix_at_snr(speech, samples.pink_noise(len(speech) / 16000, -40, rng),
                                       float(rng.choice([30.0, 20.0, 10.0])))
            buffer += [gap, noisy]
            if sum(len(x) for x in buffer) >= 5 * 60 * 16000 or written + sum(len(x) for x in buffer) >= target:
                audio = np.concatenate(buffer)[: target - written]
                sf.write(folder / f"negatives-{part:02d}.wav", audio, 16000)
                written, part, buffer = written + len(audio), part + 1, []
                if written >= target:
                    break
    real_s = sum(len(x) for x in pool[: len(real)]) / 16000
    return (f"{written / 16000 / 60:.0f} min: {len(real)} shared real clips ({real_s:.0f} s) + the default negatives "
            f"generator ({pool_s - real_s:.0f} s), remixed {written / 16000 / pool_s:.1f}x with gain, gaps and noise")


def run_timing(minutes: float, baseline_minutes: float, threads: int) -> None:
    """The issue's case through the CLI, timed; the full grid against the search on a slice, in-process."""
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        npos = timing_positives(root / "positives")
        described = timing_negatives(root / "negatives", minutes)
        (root / "keywords.txt").write_text("".join(k + "\n" for k in TIMING_KEYWORDS), encoding="utf-8")
        print(f"positives: {npos} (5 per keyword); negatives: {described}")
        print(f"uptime before: {_uptime()}")
        cmd = [sys.executable, "-m", "assistant", "keywords", "tune", str(root / "keywords.txt"), "--kws-model",
               str(CASES["en"]["model"]), "--positives", str(root / "positives"), "--negatives",
               str(root / "negatives"), "--out", str(root / "tuned.txt"), "--threads", str(threads), "--json"]
        started = time.monotonic()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        wall = time.monotonic() - started
        print(f"uptime after: {_uptime()}")
        report = json.loads(out)
        print(f"tune, {len(TIMING_KEYWORDS)} keywords x 5 positives x {minutes:g} min of negatives, {threads} "
              f"threads: {wall:.0f} s wall (search {report['seconds']:.0f} s)")
        for row in report["keywords"]:
            print(f"    {row['label']:20s} {row['setting']:12s} recall {row['recall']} "
                  f"{row['false_per_hour']:.1f} false/h")
        if baseline_minutes > 0:
            _baseline(root, baseline_minutes, threads)


def _baseline(root: Path, minutes: float, threads: int) -> None:
    files = find_transducer(CASES["en"]["model"], "kws")
    keywords = parse_keywords((root / "keywords.txt").read_text(encoding="utf-8"),
                              load_tokens(files.tokens, files.bpe_model))
    scanner = tuning.Scanner(files, keywords)
    labels = list(TIMING_KEYWORDS)
    positives = samples.load_positives(root / "positives", labels)
    negatives = samples.load_negatives([root / "negatives"])
    cut, kept = int(minutes * 60 * 16000), []
    for clip in negatives:
        take = clip.samples[: cut - sum(len(c.samples) for c in kept)]
        if len(take):
            kept.append(tuning.Clip(clip.name, take))
    hours = sum(c.seconds for c in kept) / 3600
    grid = [tuning.AS_WRITTEN] + [tuning.Setting(b, t) for b in tuning.BOOSTS for t in tuning.THRESHOLDS]
    started = time.monotonic()
    full = tuning.choose(labels, tuning.scan_all(scanner, positives + kept, grid, workers=threads), positives,
                         hours, budget_per_hour=0.5)
    full_s = time.monotonic() - started
    started = time.monotonic()
    fast = search.search(scanner, positives, kept, tuning.BOOSTS, tuning.THRESHOLDS, budget_per_hour=0.5,
                         workers=threads)
    fast_s = time.monotonic() - started
    same = sum(f.chosen.found == g.chosen.found for f, g in zip(fast, full, strict=True))
    print(f"baseline on the first {minutes:g} min of the same negatives: full grid ({len(grid)} settings) "
          f"{full_s:.0f} s, search {fast_s:.0f} s; same recall chosen for {same}/{len(labels)} keywords "
          f"(uptime {_uptime()})")


# ------------------------------------------------------------------------------------------- leave-one-out
# Words said several times in the shared real speech (transcripts.tsv), in which clips and how often there:
# each instance is cut out and held out in turn, the settings tuned from the others. English has few: the en
# KWS model hears short words (WILL, MY, ASK, WHAT, YOUR...) at no setting of the grid, so only phrases it can
# hear at all qualify. Chinese: 全球 in test_wavs 1, 2, 3; 动荡 in 1 and 2; 大家 in 0 and funasr's "欢迎大家".
LOO_WORDS = {
    "en": {"COUNTRY": {"en/whisper-jfk.flac": 2, "en/lhotse-librispeech-2412-153948-0000.flac": 1},
           "CAN DO FOR": {"en/whisper-jfk.flac": 2}},
    "zh": {"全球": {"kws:1.wav": 1, "kws:2.wav": 1, "kws:3.wav": 1}, "动荡": {"kws:1.wav": 1, "kws:2.wav": 1},
           "大家": {"kws:0.wav": 1, "zh/funasr-asr_example.wav": 1}},
}
LOCATE_THRESHOLD = tuning.THRESHOLDS[-1]  # the loosest of the grid, at every boost of it: what tuning can reach
LEAD_S, TAIL_S = 0.5, 0.05  # a cut runs from this long before the first token's time to just after the last's


def clip_name(path: Path) -> str:
    return f"kws:{path.name}" if path.parent == ZH_WAVS else path.relative_to(AUDIO).as_posix()


def language_clips(language: str) -> list[tuning.Clip]:
    paths = [p for p in sorted((AUDIO / language).glob("*")) if p.suffix in (".wav", ".flac")]
    if language == "zh":
        paths += sorted(ZH_WAVS.glob("*.wav"))
    return [tuning.Clip(clip_name(p), samples.read_clip(p).samples) for p in paths]


def locate(scanner: tuning.Scanner, clip: tuning.Clip, label: str) -> list[tuple[float, float]]:
    """(start, end) seconds of each place `label` fires in `clip` at the grid's loosest threshold, at any of
    its boosts, overlapping places merged. Each search restarts on a fresh stream just after the previous hit,
    so every time counts from a known origin (after a reset it does not)."""
    found = []
    for boost in tuning.BOOSTS:
        text = scanner.keyword_text(tuning.Setting(boost, LOCATE_THRESHOLD), [label])
        start = 0.0
        while start < clip.seconds - 0.3:
            rest = tuning.Clip(clip.name, clip.samples[int(start * 16000):])
            hit = next((h for h in scanner.scan(rest, text, first=True) if h.label == label), None)
            if hit is None:
                break
            first = hit.t if hit.t_first is None else hit.t_first
            found.append((max(0.0, start + first - LEAD_S), min(clip.seconds, start + hit.t + TAIL_S)))
            start += hit.t + 0.3
    merged: list[tuple[float, float]] = []
    for a, b in sorted(found):
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))  # the same instance, heard at another boost
        else:
            merged.append((a, b))
    return merged


def cut(clip: tuning.Clip, start: float, end: float, label: str, index: int) -> tuning.Clip:
    """The instance with 0.3 s of silence before it and 10 ms fades, as a recorded positive would be."""
    piece = clip.samples[int(start * 16000):int(end * 16000)].copy()
    fade = np.linspace(0.0, 1.0, 160, dtype=np.float32)
    piece[:160] *= fade
    piece[-160:] *= fade[::-1]
    audio = np.concatenate([np.zeros(4800, np.float32), piece])
    return tuning.Clip(f"{clip.name}@{start:.2f}-{end:.2f}#{index}", audio, label)


def leave_one_out(items: list) -> list[tuple[list, object]]:
    """(the others, the held-out one) for each item in turn."""
    return [(items[:i] + items[i + 1:], item) for i, item in enumerate(items)]


@dataclass
class LooCase:
    """What every word of one language shares in the leave-one-out run."""

    files: object
    table: object
    clips: list
    negatives: list
    speak: object
    voices: tuple
    threads: int
    budget: float
    snr_db: float | None = None  # positives mixed with pink noise at this SNR (None: as recorded)
    totals: dict = field(default_factory=lambda: {k: [0, 0, 0, 0.0] for k in ("default", "real", "synthetic")})


def loo_word(case: LooCase, word: str, expected: dict[str, int]) -> list[str]:
    """Tune `word` from all instances but one, check the held-out one; add to case.totals (found, held out,
    false alarms, hours of speech they were counted in) per kind of setting."""
    import soundfile as sf

    scanner = tuning.Scanner(case.files, parse_keywords(f"{word}\n", case.table))
    label = scanner.keywords[0].label
    said = [c for c in case.clips if c.name in expected]
    # Loosely spotted, a word can also fire on a neighbour: keep as many as the transcript says, earliest first.
    windows = {c.name: locate(scanner, c, label)[: expected[c.name]] for c in said}
    instances = [cut(c, a, b, label, i) for c in said for i, (a, b) in enumerate(windows[c.name])]
    if case.snr_db is not None:  # the same takes in a noisy room: each with its own pink noise
        rng = np.random.default_rng(0)
        instances = [dataclasses.replace(c, samples=samples.mix_at_snr(
            c.samples, samples.pink_noise(c.seconds, -40, rng), case.snr_db)) for c in instances]
    where = ", ".join(f"{name}@{a:.1f}-{b:.1f}" for name in expected for a, b in windows[name])
    notes = [f"{word}: {len(instances)} of the {sum(expected.values())} instances in the transcripts fire at "
             f"#{LOCATE_THRESHOLD:g} at some boost: {where}"]
    if len(instances) < 2:
        return notes + ["    too few to leave one out"]

    def tune(positives: list[tuning.Clip]) -> tuning.Setting:
        return search.search(scanner, positives, case.negatives, tuning.BOOSTS, tuning.THRESHOLDS,
                             budget_per_hour=case.budget, workers=case.threads)[0].chosen.setting

    false_cache: dict[tuning.Setting, int] = {}
    others = [c for c in case.clips if c.name not in expected]
    other_hours = sum(c.seconds for c in others) / 3600

    def false_alarms(setting: tuning.Setting) -> int:
        """Firings in the language's real clips that never say it."""
        if setting not in false_cache:
            text = scanner.keyword_text(setting)
            false_cache[setting] = sum(1 for c in others for h in scanner.scan(c, text) if h.label == label)
        return false_cache[setting]

    synthetic = tune(samples.synthetic_positives({label: word.lower()}, case.speak, case.voices))
    chosen_real = []
    for rest, held in leave_one_out(instances):
        with tempfile.TemporaryDirectory() as work:  # through the --positives loader, as a user's folder
            for i, clip in enumerate(rest):
                sf.write(Path(work) / f"{samples.label_key(label)}-{i + 1}.wav", clip.samples, 16000)
            real = tune(samples.load_positives(Path(work), [label]))
        chosen_real.append(real.label())
        for kind, setting in (("default", tuning.AS_WRITTEN), ("real", real), ("synthetic", synthetic)):
            fired = any(h.label == label for h in scanner.scan(held, scanner.keyword_text(setting), first=True))
            row = case.totals[kind]
            row[0] += int(fired)
            row[1] += 1
            row[2] += false_alarms(setting)
            row[3] += other_hours
    notes.append(f"    tuned from real, per fold: {', '.join(chosen_real) or '-'}; from synthetic: {synthetic.label()}")
    return notes


def run_loo(language: str, threads: int, budget: float, snr_db: float | None = None) -> list[str]:
    from assistant.commands.keywords import ESPEAK_VOICES, _espeak

    files = find_transducer(CASES[language]["model"], "kws")
    speak = _espeak(language)
    voices = ESPEAK_VOICES[language]
    case = LooCase(files, load_tokens(files.tokens, files.bpe_model), language_clips(language),
                   samples.synthetic_negatives(language, speak, voices), speak, voices, threads, budget, snr_db)
    notes = []
    for word, expected in LOO_WORDS[language].items():
        notes += loo_word(case, word, expected)
    lines = []
    names = {"default": "as written", "real": "tuned from the other real instances",
             "synthetic": "tuned from synthetic (espeak-ng)"}
    for kind, (found, held, false, hours) in case.totals.items():
        low, high = tuning.wilson(found, held)
        per_hour = false / hours if hours else 0.0
        room = "" if snr_db is None else f", pink noise at {snr_db:g} dB SNR"
        lines.append(f"| {language}{room} | {len(LOO_WORDS[language])} | {names[kind]} | {found}/{held} ({low:.0%}-"
                     f"{high:.0%}) | {false} in {hours * 60:.1f} min | {per_hour:.0f} |")
    return lines + [""] + notes


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", choices=["en", "zh", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["table", "timing", "loo"], default="table",
                        help="table: default vs tuned (synthetic); timing: the issue's 5x5x1h case; "
                        "loo: leave-one-out over words said several times in the shared speech")
    parser.add_argument("--minutes", type=float, default=60.0, help="timing: minutes of negatives")
    parser.add_argument("--max-false-per-hour", type=float, default=0.5, help="loo: the tuning budget")
    parser.add_argument("--snr", type=float, default=None, metavar="DB",
                        help="loo: mix every real instance with pink noise at this SNR (a noisy room)")
    parser.add_argument("--baseline-minutes", type=float, default=3.0,
                        help="timing: full grid against the search on this slice of the negatives (0: skip)")
    args = parser.parse_args(argv)
    if args.mode == "timing":
        run_timing(args.minutes, args.baseline_minutes, args.threads)
        return 0
    if args.mode == "loo":
        print(f"uptime before: {_uptime()}")
        print("| language | words | settings | held-out recall (95% CI) | false alarms on real speech | per hour |")
        print("|---|---|---|---|---|---|")
        notes = []
        for language in (["en", "zh"] if args.language == "both" else [args.language]):
            lines = run_loo(language, args.threads, args.max_false_per_hour, args.snr)
            split = lines.index("")
            print("\n".join(lines[:split]), flush=True)
            notes += lines[split + 1:]
        print("\n" + "\n".join(notes))
        print(f"uptime after: {_uptime()}")
        return 0
    languages = ["en", "zh"] if args.language == "both" else [args.language]
    print(describe_cpu())
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| language | keywords | settings | recall on real clips | false alarms | per hour | tuning time |")
    print("|---|---|---|---|---|---|---|")
    for language in languages:
        r = run_language(language, args.threads)
        for name in ("default", "tuned"):
            found, positives, false, hours = r[name]
            setting = "as written" if name == "default" else "tuned (synthetic positives)"
            when = "-" if name == "default" else f"{r['tune_s']:.0f} s"
            print(f"| {language} | {r['keywords']} | {setting} | {found}/{positives} | {false} | "
                  f"{false / hours:.1f} | {when} |")
        print("\n" + "\n".join("    " + line for line in r["tuned_text"].splitlines()) + "\n", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
