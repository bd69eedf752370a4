#!/usr/bin/env bash
# Install everything (runtime + export + training + dev tools + the piper voice) into .venv and run lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch only serves export/ and training/ (the runtime never imports it); TORCH_SPEC lets other machines pick
# their own build, and this machine's CPU wheel is torch==2.13.0.
.venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# EXTRAS: more extras to install (CI: aec, which builds speexdsp against Debian's libspeexdsp-dev)
.venv/bin/pip install -q -e ".[dev,export,training,piper${EXTRAS:+,$EXTRAS}]"
.venv/bin/ruff check .
.venv/bin/pytest -q "$@"
