"""Pretraining: next-token loss on raw text (`{"text": ...}` per line, MiniMind's pretrain_hq.jsonl)."""

from __future__ import annotations

from training.data import encode_pretrain
from training.loop import Stage, lm_loss, run_cli
from training.settings import PretrainSettings

STAGE = Stage(
    name="pretrain",
    output="pretrain",
    settings_cls=PretrainSettings,
    encoder=lambda settings: encode_pretrain,
    loss=lm_loss,
    description=__doc__,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
