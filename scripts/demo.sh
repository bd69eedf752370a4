#!/usr/bin/env bash
# Install the assistant into .venv and run it once, end to end, on a recording (or the microphone).
#
#   bash scripts/demo.sh                 # recording from the local mirror when there is one, else the mic
#   DEMO_INPUT=my.wav bash scripts/demo.sh
#
# Models: taken from a local mirror (ASSISTANT_MIRROR, or ../shared/assets when it exists) or fetched from
# their official URLs. The LLM is models/minimind (official MiniMind2-Small, exported to int8) when it can be
# had; otherwise the project's own demo model answers: it ships in the package (assistant/data/minimind-demo),
# so nothing is trained here. `python -m training.recipes.demo` remakes it.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# torch only serves export/ and training/; the runtime never imports it. TORCH_SPEC picks another build.
.venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pip install -q -e '.[export,training]'
# The echo canceller (the `aec` extra, the speexdsp binding) builds against Debian's libspeexdsp-dev with swig.
# Without it the assistant still runs, and while it speaks it guards against its own voice with raised stop
# thresholds and a hold-off instead (docs/echo-cancellation.md).
if command -v swig >/dev/null && pkg-config --exists speexdsp 2>/dev/null; then
  .venv/bin/pip install -q -e '.[aec]' || echo "demo: the echo canceller did not build; going on without it"
else
  echo "demo: no echo canceller (for one: sudo apt-get install libspeexdsp-dev swig, then pip install -e '.[aec]')"
fi

if [ -z "${ASSISTANT_MIRROR:-}" ] && [ -d ../shared/assets ]; then
  export ASSISTANT_MIRROR="$PWD/../shared/assets"
fi
A=.venv/bin/assistant

$A models fetch kws-en

if [ ! -f models/minimind/model.onnx ]; then
  if $A models fetch minimind2-small --allow-unverified 2>/dev/null \
      && .venv/bin/assistant-export "$($A models path minimind2-small)" --out models/minimind --quant int8; then
    echo "demo: using the official MiniMind2-Small weights (models/minimind)"
  else
    echo "demo: official MiniMind2 weights unreachable; the demo model shipped in the package answers"
  fi
fi

input="${DEMO_INPUT:-}"
if [ -z "$input" ] && [ -n "${ASSISTANT_MIRROR:-}" ] && [ -f "$ASSISTANT_MIRROR/audio/en/whisper-jfk.flac" ]; then
  input="$ASSISTANT_MIRROR/audio/en/whisper-jfk.flac"   # "...my fellow Americans, ask not what your country..."
fi
input="${input:-mic}"

echo "demo: two questions through the text path:"
$A ask --greedy "What is 12 plus 7?"          # answered by the arithmetic intent, before any model
$A ask --greedy "Who are you?"                # answered by the language model
echo
echo "demo: the voice pipeline on $input (wake phrases in examples/keywords-en.txt):"
exec $A --keywords examples/keywords-en.txt --input "$input" --json
