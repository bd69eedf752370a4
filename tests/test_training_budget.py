"""Training to a time budget: the clock, not a probe's estimate, sets the schedule and the end of the run."""

from __future__ import annotations

import json
import math

import pytest

from tests.support.training import IDENTITY, train_tiny
from training.build import lr_at


def test_the_cosine_follows_the_given_progress_and_ends_at_the_floor() -> None:
    kw = dict(total=10**9, warmup=0, peak=1e-3, min_ratio=0.1)
    assert lr_at(5, progress=0.0, **kw) == pytest.approx(1e-3)
    assert lr_at(5, progress=0.5, **kw) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(5, progress=1.0, **kw) == pytest.approx(1e-4)
    assert lr_at(5, progress=3.0, **kw) == pytest.approx(1e-4)  # past the budget: stays at the floor
    # Without a budget the step count still drives it, as before.
    expected = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_at(9, total=10, warmup=0, peak=1e-3, min_ratio=0.1) == pytest.approx(expected)


def test_a_budgeted_run_ends_by_the_clock_and_writes_its_weights(tmp_path) -> None:
    # 2 s of budget and no step count: however fast or slow this machine is right now, the run ends on its own
    # (at least one step), writes the final weights, and its learning rate never rises after the warmup.
    result = train_tiny("sft", tmp_path / "sft", IDENTITY, budget_min=2 / 60, lr=1e-3, min_lr_ratio=0.1)
    assert result.final_path is not None and result.final_path.is_file()
    assert result.step >= 1 and result.total_steps == result.step
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == result.step
    assert all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:], strict=False))
