"""Full supervised fine-tuning on chats (`{"conversations": [...]}`, MiniMind's sft_*.jsonl); loss only on the
assistant's tokens."""

from __future__ import annotations

from training.data import encode_sft
from training.loop import Stage, lm_loss, run_cli
from training.settings import SFTSettings

STAGE = Stage(
    name="sft",
    output="full_sft",
    settings_cls=SFTSettings,
    encoder=lambda settings: encode_sft,
    loss=lm_loss,
    description=__doc__,
)


def main(argv: list[str] | None = None) -> int:
    return run_cli(STAGE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
