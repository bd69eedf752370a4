"""Reasoning distillation: SFT on answers in the `<think>...</think><answer>...</answer>` format (MiniMind's
r1_mix_1024.jsonl), with extra loss weight on the tag tokens so the model learns the format reliably."""

from __future__ import annotations

from training.data import make_reason_encoder
from training.loop import Stage, lm_loss, run_cli
from training.settings import ReasonSettings

STAGE = Stage(
    name="reason",
    output="reason",
    settings_cls=ReasonSettings,
    encoder=lambda settings: make_reason_encoder(settings.tag_weight),
    loss=lm_loss,
    # Units are target tokens, not weights: a tag token counts once in the mean but pulls tag_weight times
    # harder.
    units=lambda batch: float((batch.weights > 0).sum()),
    description=__doc__,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
