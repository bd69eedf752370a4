"""CI-sized soak: a few minutes of generated audio (real clips, room noise, silence, planted wake phrases)
through the real daemon in-process, faster than real time. The long run is `bench/soak.py --minutes 240`.

Asserted: every planted wake detected, no false wake, every detected wake answered, no errors, and no growth
of file descriptors or threads after warm-up. The RSS slope is printed, not asserted: over a few minutes it
is dominated by allocator noise (the bench reports it over hours).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Plan, report, run_soak
from speechdata.assets import KWS_EN
from tests.conftest import require


@pytest.fixture(scope="module")
def soak(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory):
    require(KWS_EN)
    # Short pauses: many events per minute of audio; 4 minutes take ~15 s here.
    plan = Plan(minutes=4.0, seed=1, gap_s=(1.0, 4.0))
    result = run_soak(plan, tiny_llm, sample_s=15.0, workdir=tmp_path_factory.mktemp("soak"))
    print(report(result))
    return result


def test_every_planted_wake_is_detected(soak) -> None:
    assert soak.planted >= 6, "the plan should hold several planted wakes"
    assert soak.detected == soak.planted, report(soak)


def test_no_false_wake_on_speech_noise_or_silence(soak) -> None:
    assert soak.non_wake_speech_s > 45, "the plan should hold about a minute of non-wake speech"
    assert soak.false_wakes == 0, soak.false_wake_where


def test_every_wake_is_answered_without_errors(soak) -> None:
    assert soak.answered == soak.detected, soak.unanswered
    assert soak.replies == soak.detected
    assert not soak.errors


def test_no_fd_or_thread_growth(soak) -> None:
    assert soak.fds_end <= soak.fds_start, (soak.fds_start, soak.fds_end)
    assert soak.threads_end <= soak.threads_start, (soak.threads_start, soak.threads_end)
    assert soak.py_threads_end <= soak.py_threads_start
    assert len(soak.rss_samples) >= 8  # RSS was sampled through the run (slope in the printed report)
