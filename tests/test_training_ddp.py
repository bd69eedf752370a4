"""torchrun with 2 gloo processes reproduces one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from tests.conftest import REPO, require
from tests.support.training import IDENTITY, TOKENIZER


def _args(out, batch: int, accum: int) -> list[str]:
    return [
        "--init-from",
        "",
        "--data",
        str(require(IDENTITY)),
        "--tokenizer",
        str(require(TOKENIZER)),
        "--out-dir",
        str(out),
        "--hidden-size",
        "64",
        "--num-hidden-layers",
        "2",
        "--num-attention-heads",
        "1",
        "--num-key-value-heads",
        "1",
        "--max-length",
        "64",
        "--batch-size",
        str(batch),
        "--grad-accum",
        str(accum),
        "--steps",
        "4",
        "--lr",
        "3e-3",
        "--no-progress",
        "--threads",
        "1",
        "--save-every",
        "0",
    ]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_match_one_process(tmp_path):
    # Global batch 8 both ways: 2 ranks x 2 sequences x 2 accumulation steps vs 1 process x 4 x 2.
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.sft",
            *_args(tmp_path / "ddp", 2, 2),
        ]
    )
    # The one-process run goes through the one entry point, the torchrun one through the training.sft alias.
    _run([sys.executable, "-m", "training", "sft", *_args(tmp_path / "one", 4, 2)])
    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").open()] for d in ("ddp", "one")
    ]
    assert len(losses[0]) == 4
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) < 1e-5, losses
    ddp = torch.load(tmp_path / "ddp" / "full_sft_64.pth", weights_only=True)
    one = torch.load(tmp_path / "one" / "full_sft_64.pth", weights_only=True)
    assert ddp.keys() == one.keys()
    for key in one:  # fp16 files: a 1e-6 difference may round to the neighbouring fp16 value
        torch.testing.assert_close(ddp[key].float(), one[key].float(), atol=2e-3, rtol=2e-3)
