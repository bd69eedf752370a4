"""`assistant example [NAME] [--out FILE]`: print or write a shipped example file (config, wake words).

After `pip install` or pipx there is no checkout with config.yaml and examples/: this is how a user gets them,
e.g. `assistant example config --out config.yaml`, `assistant example keywords-en --out keywords.txt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assistant.data import EXAMPLES, read_example
from assistant.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", choices=sorted(EXAMPLES), help="the example (none: list them)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE (never overwritten)")


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        for name, file_name in EXAMPLES.items():
            print(f"{name:12s} {file_name}")
        return 0
    text = read_example(args.name)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with args.out.open("x", encoding="utf-8") as f:  # "x": an existing file is the user's, keep it
            f.write(text)
    except FileExistsError as exc:
        raise ConfigError(f"--out {args.out} exists already; remove it or pick another name") from exc
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: {exc.strerror}") from exc
    print(f"wrote {args.out}")
    return 0
