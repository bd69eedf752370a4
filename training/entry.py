"""One entry point for every training stage: `python -m training STAGE [options]` (training/__main__.py), with
STAGE one of the names in `training.stages.STAGES` and the options generated from its settings dataclass.

`python -m training.STAGE [options]` (and `torchrun ... -m training.STAGE`) is the same command under its old
name: each stage module is an alias that calls `run_alias`.
"""

from __future__ import annotations

import argparse

from training.cli import report_errors, setup_logging
from training.loop import train
from training.settings import add_arguments, from_args, parse
from training.stages import STAGES, Stage


def main(argv: list[str] | None = None) -> int:
    """`python -m training STAGE [options]`."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train MiniMind: one stage of the pipeline per run (see TRAINING.md).",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES.values():
        # The sub-parser is the alias's parser under another prog: the same flags, defaults and help.
        sub = stages.add_parser(stage.name, help=stage.summary, description=stage.description)
        add_arguments(sub, stage.settings_cls)
    setup_logging()
    args = parser.parse_args(argv)
    stage = STAGES[args.stage]
    return _run(stage, from_args(stage.settings_cls, args))


def run_alias(name: str, argv: list[str] | None = None) -> int:
    """`python -m training.NAME [options]`: the same as `python -m training NAME [options]`."""
    stage = STAGES[name]
    setup_logging()
    settings = parse(stage.settings_cls, argv, prog=f"python -m training.{name}", description=stage.description)
    return _run(stage, settings)


def _run(stage: Stage, settings: object) -> int:
    try:
        return report_errors(f"training.{stage.name}", lambda: train(settings, stage))
    except KeyboardInterrupt:
        return 130  # the shell's code for Ctrl-C; the loop saved a checkpoint to resume from
