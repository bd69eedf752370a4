"""`assistant keywords test | tune | record`: make text wake words fit the user's own voice and room.

    assistant keywords test KEYWORDS AUDIO...            what fires where, and what would at looser settings
    assistant keywords tune KEYWORDS [--positives DIR] [--negatives DIR ...] --out TUNED.txt
    assistant keywords record LABEL --count 5 --out DIR  prompts, then saves LABEL-1.wav ... from the microphone

The daemon reads a tuned file like any keywords file (and picks up a new one on SIGHUP).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from assistant.errors import ConfigError
from assistant.models.files import find_transducer
from assistant.settings import DEFAULT_CONFIG, Settings, find_config, load_settings
from assistant.wake import samples, search, tuning
from assistant.wake.keywords import Keyword, load_keywords, load_tokens

log = logging.getLogger(__name__)

LOOSER = (tuning.Setting(2.0, 0.1), tuning.Setting(3.0, 0.05))  # near misses shown by `test`
ESPEAK_VOICES = {"en": ("en-us", "en-gb", "en-gb-scotland", "en-us+f3"), "zh": ("cmn", "cmn+f3")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help=f"settings file (default: {DEFAULT_CONFIG})")
    common.add_argument("--kws-model", type=Path, metavar="DIR", help="wake word model [wake.model_dir]")
    common.add_argument("--model-dir", type=Path, metavar="DIR", help="models folder [paths.models_dir]")
    common.add_argument("--threads", type=int, default=2, help="parallel decodes (default 2)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{test,tune,record}")

    test = sub.add_parser("test", parents=[common], help="report what fires in each recording")
    test.add_argument("keywords", type=Path, metavar="KEYWORDS")
    test.add_argument("audio", type=Path, nargs="+", metavar="AUDIO")
    test.add_argument("--json", action="store_true", help="one JSON object on stdout")

    tune = sub.add_parser("tune", parents=[common], help="choose :boost #threshold per keyword from recordings")
    tune.add_argument("keywords", type=Path, metavar="KEYWORDS")
    tune.add_argument("--positives", type=Path, metavar="DIR|TSV",
                      help="recordings of each phrase (DIR/LABEL/*.wav, DIR/LABEL-1.wav or a TSV of file, label); "
                      "none: synthetic ones from espeak-ng")
    tune.add_argument("--negatives", type=Path, action="append", default=[], metavar="DIR",
                      help="audio with no keyword in it (repeatable); none: synthetic speech and room tone")
    tune.add_argument("--out", type=Path, required=True, metavar="TUNED.txt")
    tune.add_argument("--max-false-per-hour", type=float, default=0.5, metavar="N",
                      help="false-alarm budget on the negatives (default 0.5 per hour)")
    tune.add_argument("--language", choices=["en", "zh"], default=None,
                      help="synthetic audio language (default: from the model's tokens)")
    tune.add_argument("--boosts", type=_floats, default=tuning.BOOSTS, metavar="B,B,...",
                      help=f"boosts to try (default {','.join(f'{b:g}' for b in tuning.BOOSTS)})")
    tune.add_argument("--thresholds", type=_floats, default=tuning.THRESHOLDS, metavar="T,T,...",
                      help=f"thresholds to try (default {','.join(f'{t:g}' for t in tuning.THRESHOLDS)})")
    tune.add_argument("--voices", type=lambda s: tuple(s.split(",")), default=None, metavar="V,V,...",
                      help="espeak-ng voices for synthetic audio (default: four per language)")
    tune.add_argument("--json", action="store_true", help="the report as JSON on stdout")

    record = sub.add_parser("record", parents=[common], help="record positives of one phrase")
    record.add_argument("label", metavar="LABEL")
    record.add_argument("--count", type=int, default=5)
    record.add_argument("--out", type=Path, default=Path("positives"), metavar="DIR",
                        help="positives folder; files go to DIR/LABEL/ (default positives/)")
    record.add_argument("--input", default="mic", metavar="mic|FILE|-", help="where the takes come from")
    record.add_argument("--device", metavar="NAME|INDEX", help="microphone by name or index")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or not all(0 < v < 100 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers below 100, got {text!r}")
    return values


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"wake.model_dir": args.kws_model, "paths.models_dir": args.model_dir}
    return load_settings(find_config(args.config), overrides)


def _scanner(args: argparse.Namespace) -> tuple[tuning.Scanner, list[Keyword], str]:
    settings = _settings(args)
    files = find_transducer(settings.wake_model_dir(), settings.wake.model)
    table = load_tokens(files.tokens, files.bpe_model)
    keywords = load_keywords(args.keywords, table)
    language = "zh" if table.is_pinyin else "en"
    return tuning.Scanner(files, keywords), keywords, language


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be at least 1")
    if args.action == "test":
        return _test(args)
    if args.action == "tune":
        return _tune(args)
    from assistant.commands.record import record_takes

    return record_takes(args, _settings(args))


# ------------------------------------------------------------------------------------------------------ test


def _test(args: argparse.Namespace) -> int:
    scanner, _, _ = _scanner(args)
    clips = [samples.read_clip(path) for path in args.audio]
    settings = [tuning.AS_WRITTEN, *LOOSER]
    results = tuning.scan_all(scanner, clips, settings, workers=args.threads)
    rows = []
    for clip in clips:
        seen: set[str] = set()
        for setting in settings:
            for hit in results[setting]:
                if hit.clip != clip.name or hit.label in seen:
                    continue
                seen.add(hit.label)
                rows.append({"file": clip.name, "t": hit.t, "label": hit.label, "tokens": " ".join(hit.tokens),
                             "fires": "as written" if setting == tuning.AS_WRITTEN else f"only at {setting.label()}"})
        if not seen:
            rows.append({"file": clip.name, "t": None, "label": None, "tokens": "", "fires": "nothing, even at "
                         f"{LOOSER[-1].label()}"})
    if args.json:
        print(json.dumps({"keywords": str(args.keywords), "detections": rows}, ensure_ascii=False))
        return 0
    print(f"{'file':40s} {'time':>6s}  {'label':20s} {'fires':26s} tokens")
    for row in rows:
        t = f"{row['t']:.2f}" if row["t"] is not None else "-"
        print(f"{Path(row['file']).name[:40]:40s} {t:>6s}  {str(row['label'] or '-')[:20]:20s} "
              f"{row['fires'][:26]:26s} {row['tokens']}")
    return 0


# ------------------------------------------------------------------------------------------------------ tune


def _espeak(language: str) -> samples.Speak:
    """espeak-ng through the reply stage's own wrapper: always installed where the assistant speaks."""
    from assistant.audio.chunk import SAMPLE_RATE
    from assistant.audio.resample import resample
    from assistant.reply.tts import EspeakTts
    from assistant.settings import TtsSettings

    def speak(text: str, voice: str, speed: float):
        audio, rate = EspeakTts(TtsSettings(engine="espeak", voice=voice, speed=speed)).synthesize(text)
        return resample(audio, rate, SAMPLE_RATE)

    return speak


def _progress():
    """A bar per phase on a terminal; in a log, one line at half way and one at the end of each phase."""
    started = time.monotonic()
    last: dict[str, int] = {}

    def show(phase: str, done: int, total: int) -> None:
        previous = last.get(phase, -1)
        last[phase] = done
        if total <= 0 or previous >= total:
            return
        if not sys.stderr.isatty() and not (done >= total or previous < total // 2 <= done):
            return
        width = 30
        bar = "#" * (width * min(done, total) // total)
        sys.stderr.write(f"\r{phase:9s} [{bar:{width}s}] {done}/{total} {time.monotonic() - started:.0f} s")
        if done >= total or not sys.stderr.isatty():
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _tune(args: argparse.Namespace) -> int:
    scanner, keywords, model_language = _scanner(args)
    language = args.language or model_language
    labels = list(dict.fromkeys(k.label for k in keywords))
    phrases = {k.label: k.phrase for k in keywords}
    voices = args.voices or ESPEAK_VOICES[language]
    if args.positives is not None:
        positives = samples.load_positives(args.positives, labels)
        source = f"{len(positives)} recordings from {args.positives}"
    else:
        positives = samples.synthetic_positives(phrases, _espeak(language), voices)
        source = f"{len(positives)} synthetic positives (espeak-ng, {len(voices)} voices x 3 speeds x 3 noise levels)"
    if args.negatives:
        negatives = samples.load_negatives(args.negatives)
        negative_source = ", ".join(str(p) for p in args.negatives)
    else:
        negatives = samples.synthetic_negatives(language, _espeak(language), voices)
        negative_source = "synthetic speech and room tone (no negatives given)"
    negative_hours = sum(c.seconds for c in negatives) / 3600
    log.info("tuning %d keywords on %s; negatives: %.1f min of %s", len(labels), source, negative_hours * 60,
             negative_source)
    if any(not 0 < t < 1 for t in args.thresholds):
        raise ConfigError(f"--thresholds {args.thresholds}: each must be between 0 and 1")
    started = time.monotonic()
    choices = search.search(scanner, positives, negatives, args.boosts, args.thresholds,
                            budget_per_hour=args.max_false_per_hour, workers=args.threads, progress=_progress())
    elapsed = time.monotonic() - started
    note = (f"{time.strftime('%Y-%m-%d %H:%M')}, {source}, {negative_hours * 60:.1f} min of negatives, "
            f"budget {args.max_false_per_hour:g} false/h")
    text = Path(args.keywords).read_text(encoding="utf-8")
    args.out.write_text(tuning.tuned_lines(text, choices, keywords, note), encoding="utf-8")
    report = _report(choices, source, negative_source, negative_hours, elapsed, synthetic=args.positives is None)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report)
    log.info("wrote %s", args.out)
    return 0


def _report(choices, source: str, negative_source: str, hours: float, elapsed: float, *, synthetic: bool) -> dict:
    rows = []
    for c in choices:
        low, high = tuning.wilson(c.chosen.found, c.chosen.positives)
        rows.append({
            "label": c.label,
            "setting": c.chosen.setting.label(),
            "recall": f"{c.chosen.found}/{c.chosen.positives}",
            "recall_ci95": [round(low, 2), round(high, 2)],
            "false_per_hour": round(c.chosen.false_per_hour, 2),
            "default_recall": f"{c.default.found}/{c.default.positives}",
            "false_alarms": c.chosen.false_alarms,
            "default_false_per_hour": round(c.default.false_per_hour, 2) if c.default.measured else None,
            # the nearest setting ruled out by the budget (more recall or looser); its count stopped once over it
            "next_looser": None if c.runner_up is None else {
                "setting": c.runner_up.setting.label(),
                "recall": f"{c.runner_up.found}/{c.runner_up.positives}",
                "false_per_hour": round(c.runner_up.false_per_hour, 2),
                "false_alarms_at_least": c.runner_up.false_alarms,
            },
        })
    return {"positives": source, "synthetic_positives": synthetic, "negatives": negative_source,
            "negative_minutes": round(hours * 60, 1), "seconds": round(elapsed, 1), "keywords": rows}


def _print_report(report: dict) -> None:
    print(f"positives: {report['positives']}")
    print(f"negatives: {report['negative_minutes']} min of {report['negatives']}")
    if report["synthetic_positives"]:
        print("note: tuned on synthetic positives only; record your own (`assistant keywords record`) to do better")
    print(f"{'label':20s} {'setting':14s} {'recall':>7s} {'95% CI':>10s} {'false/h':>8s}  {'default':>14s}  "
          "next ruled out")
    for row in report["keywords"]:
        low, high = row["recall_ci95"]
        nxt = row["next_looser"]
        nxt_text = f"{nxt['setting']} {nxt['recall']} >={nxt['false_per_hour']}/h" if nxt else "-"
        default_fa = row["default_false_per_hour"]
        default_text = "not run" if default_fa is None else f"{default_fa:.1f}/h"
        print(f"{row['label'][:20]:20s} {row['setting']:14s} {row['recall']:>7s} {low:>4.0%}-{high:<4.0%} "
              f"{row['false_per_hour']:>8.2f}  {row['default_recall']:>5s} {default_text:>8s}  {nxt_text}")
    print(f"took {report['seconds']:.0f} s")
