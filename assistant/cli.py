"""Command line entry point: `assistant [run options]` runs the daemon; named subcommands do the rest.

Each subcommand lives in its own module and exposes `add_arguments(parser)` and `run(args) -> int`, so this
file only dispatches. A plain `assistant --keywords k.txt` (no subcommand) is the daemon, as the design card
promises.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from assistant.errors import FAILURE, INTERRUPTED, AssistantError

# name -> (module, help). Modules are imported lazily so `assistant ask` never loads sherpa-onnx and
# `assistant models list` loads neither model runtime.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("assistant.commands.run", "run the voice assistant (the default)"),
    "serve": ("assistant.commands.serve", "run the network servers (OpenAI API, Wyoming) without a microphone"),
    "ask": ("assistant.commands.ask", "ask MiniMind one question from the command line"),
    "models": ("assistant.commands.models", "list or fetch model files"),
    "keywords": ("assistant.commands.keywords", "test, tune or record wake words for your voice and room"),
    "install-service": ("assistant.commands.install_service", "write the systemd unit for this install"),
    "example": ("assistant.commands.example", "print or write a shipped example (config.yaml, wake words)"),
}

log = logging.getLogger(__name__)


def _build_parser(name: str) -> argparse.ArgumentParser:
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    prog = "assistant" if name == "run" else f"assistant {name}"
    parser = argparse.ArgumentParser(prog=prog, description=help_text)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: assistant [SUBCOMMAND] [options]\n\nsubcommands:")
        for name, (_, help_text) in SUBCOMMANDS.items():
            print(f"  {name:16s} {help_text}")
        print("\nWith no subcommand, `assistant` runs the daemon: see `assistant run --help`.")
        return 0
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    if argv and argv[0] == name:
        argv = argv[1:]
    args = _build_parser(name).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except AssistantError as exc:
        # A user-fixable problem: one clear line, no traceback.
        print(f"assistant: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception:  # noqa: BLE001 - last resort: log the bug with its traceback
        log.exception("unexpected error")
        return FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
