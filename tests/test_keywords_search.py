"""The cheap tuning search (assistant/wake/search.py) against the full grid, on the shared English clips."""

from __future__ import annotations

from assistant.models.files import find_transducer
from assistant.wake import search, tuning
from assistant.wake.keywords import load_tokens, parse_keywords
from speechdata.assets import AUDIO, JFK, KWS_EN, KWS_ZH, LEOPARD
from speechdata.audio import load_clip, wake_phrase
from tests.conftest import require


def test_search_chooses_what_the_full_grid_chooses() -> None:
    files = find_transducer(require(KWS_EN), "kws-en")
    table = load_tokens(files.tokens, files.bpe_model)
    scanner = tuning.Scanner(files, parse_keywords("FELLOW AMERICANS\nCOUNTRY\nGOSPEL\n", table))
    positives = [
        tuning.Clip("fellow", wake_phrase(), "FELLOW AMERICANS"),
        tuning.Clip("jfk", load_clip(require(JFK)), "COUNTRY"),
        tuning.Clip("leopard", load_clip(require(LEOPARD)), "GOSPEL"),
    ]
    # "...my native country" is said in the first: a false alarm for COUNTRY that the budget must weigh.
    negatives = [tuning.Clip(name, load_clip(require(AUDIO / "en" / name))) for name in (
        "lhotse-librispeech-2412-153948-0000.flac", "wenet-librispeech-1995-1837-0001.wav",
        "lhotse-ljspeech-LJ002-0035.wav")]
    boosts, thresholds = (1.0, 3.0), (0.3, 0.15, 0.05)
    hours = sum(c.seconds for c in negatives) / 3600
    for budget in (0.5, 2.5 / hours):  # none allowed, then two per negative set
        grid = [tuning.AS_WRITTEN] + [tuning.Setting(b, t) for b in boosts for t in thresholds]
        full = tuning.choose(["FELLOW AMERICANS", "COUNTRY", "GOSPEL"],
                             tuning.scan_all(scanner, positives + negatives, grid), positives, hours,
                             budget_per_hour=budget)
        fast = search.search(scanner, positives, negatives, boosts, thresholds, budget_per_hour=budget,
                             segment_s=10.0)
        for f, g in zip(fast, full, strict=True):
            assert f.label == g.label
            assert (f.chosen.found, f.chosen.setting) == (g.chosen.found, g.chosen.setting), (budget, f, g)
            assert f.chosen.false_per_hour <= budget or f.chosen.setting == tuning.AS_WRITTEN


def test_negatives_are_cut_into_overlapping_pieces_that_count_each_second_once() -> None:
    import numpy as np

    clip = tuning.Clip("long", np.zeros(16000 * 25, np.float32))
    own = tuning.Clip("pos", np.zeros(16000, np.float32), "X")
    segs = search.segments([clip], [own], seconds=10.0, overlap=2.0)
    assert [round(s.clip.seconds, 2) for s in segs] == [10.0, 12.0, 7.0, 1.0]
    assert [s.owned_from for s in segs] == [0.0, 2.0, 2.0, 0.0]
    assert abs(sum(s.hours for s in segs) * 3600 - 25.0) < 1e-6 and segs[-1].exclude == "X"


def test_leave_one_out_holds_each_instance_out_once() -> None:
    from bench.keywords import leave_one_out

    assert leave_one_out(["a", "b", "c"]) == [(["b", "c"], "a"), (["a", "c"], "b"), (["a", "b"], "c")]


def test_instances_of_a_word_are_found_and_cut_from_real_speech() -> None:
    # 全球 is said once in each of three zh KWS test clips: each is found, and its cut fires on its own.
    from bench.keywords import ZH_WAVS, cut, locate

    files = find_transducer(require(KWS_ZH), "kws-zh")
    scanner = tuning.Scanner(files, parse_keywords("全球\n", load_tokens(files.tokens, files.bpe_model)))
    label = scanner.keywords[0].label
    loose = scanner.keyword_text(tuning.Setting(3.0, 0.05))
    for name in ("1.wav", "2.wav", "3.wav"):
        clip = tuning.Clip(name, load_clip(require(ZH_WAVS / name)))
        places = locate(scanner, clip, label)
        assert len(places) == 1, (name, places)
        piece = cut(clip, *places[0], label, 0)
        assert 0.5 < piece.seconds < 2.0 and piece.label == label
        assert any(h.label == label for h in scanner.scan(piece, loose))
