"""`assistant keywords test | tune | record` on the shared recordings and espeak-ng speech."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from assistant import cli
from assistant.errors import AUDIO, CONFIG
from assistant.models.files import find_transducer
from assistant.wake import samples, tuning
from assistant.wake.keywords import load_tokens, parse_keywords
from speechdata.assets import JFK, KWS_EN
from speechdata.audio import SAMPLE_RATE, load_clip, silence, wake_phrase
from tests.conftest import require


def needs_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (Debian: apt-get install -y espeak-ng)")


def keywords(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keywords.txt"
    path.write_text(text, encoding="utf-8")
    return path


def main_json(capsys, *argv: str) -> dict:
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_test_reports_label_time_and_tokens_and_near_misses(tmp_path, capsys) -> None:
    model = str(require(KWS_EN))
    # FELLOW AMERICANS fires as written; PORCUPINE is never said in JFK.
    kw = keywords(tmp_path, "FELLOW AMERICANS @fellow\nPORCUPINE\n")
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, silence(1.0), SAMPLE_RATE)
    report = main_json(capsys, "keywords", "test", str(kw), str(require(JFK)), str(quiet), "--kws-model", model,
                       "--json")
    rows = report["detections"]
    jfk = [r for r in rows if r["file"].endswith("whisper-jfk.flac")]
    assert [r["label"] for r in jfk if r["fires"] == "as written"] == ["fellow"]
    assert 1.5 < jfk[0]["t"] < 3.0 and "AMERICA" in jfk[0]["tokens"]
    assert [r["fires"] for r in rows if r["file"].endswith("quiet.wav")][0].startswith("nothing")


def test_bad_tuning_input_names_what_is_wrong(tmp_path, capsys) -> None:
    model = str(require(KWS_EN))
    kw = keywords(tmp_path, "FELLOW AMERICANS\nHEY COMPUTER\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "tuned.txt")
    base = ["keywords", "tune", str(kw), "--kws-model", model, "--out", out]

    assert cli.main([*base, "--positives", str(empty), "--negatives", str(empty)]) == CONFIG
    assert "has no audio files" in capsys.readouterr().err

    only_one = tmp_path / "pos"
    (only_one / "fellow_americans").mkdir(parents=True)
    sf.write(only_one / "fellow_americans" / "1.wav", wake_phrase(), SAMPLE_RATE)
    assert cli.main([*base, "--positives", str(only_one), "--negatives", str(empty)]) == CONFIG
    assert "no recordings for HEY COMPUTER" in capsys.readouterr().err

    narrow = tmp_path / "narrow"
    narrow.mkdir()
    sf.write(narrow / "fellow_americans-1.wav", wake_phrase()[::2], 8000)
    assert cli.main([*base, "--positives", str(narrow)]) == CONFIG
    assert "8000 Hz is too low" in capsys.readouterr().err

    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    (noise_dir / "readme.txt").write_text("no audio here", encoding="utf-8")
    sf.write(only_one / "fellow_americans" / "2.wav", wake_phrase(), SAMPLE_RATE)
    kw_one = keywords(tmp_path, "FELLOW AMERICANS\n")
    assert cli.main(["keywords", "tune", str(kw_one), "--kws-model", model, "--out", out, "--positives",
                     str(only_one), "--negatives", str(noise_dir)]) == CONFIG
    assert f"negatives folder {noise_dir} has no audio files" in capsys.readouterr().err


def test_synthetic_positives_are_made_and_detected(tmp_path) -> None:
    needs_espeak()
    files = find_transducer(require(KWS_EN), "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    kws = parse_keywords("FELLOW AMERICANS @fellow\n", table)
    from assistant.commands.keywords import _espeak

    clips = samples.synthetic_positives({"fellow": "fellow Americans"}, _espeak("en"), ["en-us", "en-gb"],
                                        speeds=(0.85, 1.0), snrs_db=(None, 10.0))
    assert [c.label for c in clips] == ["fellow"] * 8
    assert all(c.seconds > 1.0 and np.max(np.abs(c.samples)) > 0.05 for c in clips)
    scanner = tuning.Scanner(files, kws)
    loose = scanner.keyword_text(tuning.Setting(2.0, 0.1))
    # espeak-ng is a robotic voice: this model hears it on a fraction of takes, which is why tune makes many.
    assert any(any(h.label == "fellow" for h in scanner.scan(c, loose)) for c in clips)


def test_tuned_file_fires_on_held_back_positives_the_defaults_miss(tmp_path, capsys) -> None:
    # Tuned on espeak-ng voices, checked on a voice and speed it never heard (held back), against the negatives
    # budget measured on real English speech that never says the phrase.
    needs_espeak()
    model = str(require(KWS_EN))
    phrase = "GOOD MORNING"
    kw = keywords(tmp_path, f"{phrase} @morning\n")
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    for clip in ("lhotse-librispeech-2412-153948-0000.flac", "picovoice-leopard-test.wav"):
        shutil.copy(require(JFK.parent / clip), negatives / clip)
    tuned = tmp_path / "tuned.txt"
    report = main_json(capsys, "keywords", "tune", str(kw), "--kws-model", model, "--out", str(tuned),
                       "--negatives", str(negatives), "--voices", "en-us,en-gb", "--boosts", "1,2,3",
                       "--thresholds", "0.25,0.15,0.1,0.05", "--max-false-per-hour", "60", "--json")
    assert report["synthetic_positives"] is True
    row = report["keywords"][0]
    assert row["false_per_hour"] <= 60
    text = tuned.read_text(encoding="utf-8")
    assert text.startswith("# tuned by `assistant keywords tune`")

    from assistant.commands.keywords import _espeak

    held = samples.synthetic_positives({"morning": "good morning"}, _espeak("en"), ["en-gb-scotland", "en-us+f3"],
                                       speeds=(0.9, 1.15), snrs_db=(None, 15.0), seed=7)
    files = find_transducer(Path(model), "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    default_scan = tuning.Scanner(files, parse_keywords(kw.read_text(encoding="utf-8"), table))
    tuned_scan = tuning.Scanner(files, parse_keywords(text, table))
    as_written = tuning.AS_WRITTEN

    def found(scanner: tuning.Scanner) -> int:
        words = scanner.keyword_text(as_written)
        return sum(any(h.label == "morning" for h in scanner.scan(c, words)) for c in held)

    before, after = found(default_scan), found(tuned_scan)
    assert after >= before
    if row["setting"] != "as written":
        assert after > before, (row, before, after)


def test_record_cuts_checks_and_saves_takes_from_a_file(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    room = (samples.pink_noise(1.0, -60, rng)).astype(np.float32)
    phrase = wake_phrase()[int(1.2 * SAMPLE_RATE):]  # "fellow Americans"
    clipped = np.clip(phrase * 40, -1, 1).astype(np.float32)
    stream = np.concatenate([room, clipped, room, phrase, room, room, phrase, room, room])
    recording = tmp_path / "session.wav"
    sf.write(recording, stream, SAMPLE_RATE)
    out = tmp_path / "positives"
    assert cli.main(["keywords", "record", "FELLOW AMERICANS", "--count", "2", "--input", str(recording),
                     "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "take refused: clipped" in captured.err
    saved = sorted((out / "fellow_americans").glob("*.wav"))
    assert [p.name for p in saved] == ["fellow_americans-1.wav", "fellow_americans-2.wav"]
    for path in saved:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SAMPLE_RATE and 0.5 < len(audio) / rate < 4.0
    # A second session adds takes, never overwrites.
    assert cli.main(["keywords", "record", "FELLOW AMERICANS", "--count", "1", "--input", str(recording),
                     "--out", str(out)]) == 0
    assert len(list((out / "fellow_americans").glob("*.wav"))) == 3
    silent = tmp_path / "silent.wav"
    sf.write(silent, silence(3.0), SAMPLE_RATE)
    assert cli.main(["keywords", "record", "X", "--input", str(silent), "--out", str(out)]) == AUDIO


def test_the_daemon_reads_a_tuned_file(tmp_path) -> None:
    files = find_transducer(require(KWS_EN), "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    original = "# mine\nFELLOW AMERICANS @fellow\n"
    kws = parse_keywords(original, table)
    choice = tuning.Choice("fellow", tuning.Score(tuning.Setting(2.0, 0.15), 3, 3, 0, 1.0),
                           tuning.Score(tuning.AS_WRITTEN, 1, 3, 0, 1.0), None)
    text = tuning.tuned_lines(original, [choice], kws, "test")
    assert text.splitlines()[1:] == ["# mine", "FELLOW AMERICANS :2 #0.15 @fellow"]
    reparsed = parse_keywords(text, table)
    assert {(k.label, k.boost, k.threshold) for k in reparsed} == {("fellow", 2.0, 0.15)}
    jfk = tuning.Clip("jfk", load_clip(require(JFK)))
    scanner = tuning.Scanner(files, reparsed)
    assert [h.label for h in scanner.scan(jfk, scanner.keyword_text(tuning.AS_WRITTEN))] == ["fellow"]
