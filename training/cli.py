"""What every `python -m training...` command does the same way: log lines on stderr, its help from the module
docstring, and a user error reported as one line and its exit code (never a traceback)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from assistant.errors import AssistantError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose help shows `doc` as written (usage examples keep their lines)."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def report_errors(name: str, work: Callable[[], object]) -> int:
    """Run `work`; 0 when it returns, the error's exit code (and one line on stderr) when it raises a user error."""
    try:
        work()
    except AssistantError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
