#!/usr/bin/env bash
# A regular install works: build the wheel, install it with its declared dependencies into a fresh venv outside
# the checkout, and run the installed `assistant` from a folder that is not the checkout: `models list`,
# `install-service --dry-run`, `example`, and one `--input FILE` end to end (wake, transcript, reply) with the
# shipped config.yaml and example wake words. Everything lives in a temporary folder, removed at the end.
#
#   scripts/check_wheel.sh [--llm DIR]
#
# --llm DIR: an exported MiniMind folder for the reply; without it the tiny reference model in ../shared is
# exported with this checkout's python (needs torch, as scripts/test.sh installs). Environment: PYTHON (the
# checkout's interpreter, default .venv/bin/python: builds the wheel and exports), ASSISTANT_SHARED (default
# ../shared), CHECK_WHEEL_WHEELHOUSE (where the dependency wheels are kept between runs, default
# ~/.cache/edge-assistant/wheelhouse; a run fills it from PyPI when the wheel needs what it lacks).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SHARED=${ASSISTANT_SHARED:-$REPO/../shared}
WHEELHOUSE=${CHECK_WHEEL_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-assistant/wheelhouse}
KWS=$SHARED/assets/kws/en-gigaspeech-3.3M-mobile
CLIP=$SHARED/assets/audio/en/whisper-jfk.flac
LLM=
while [ $# -gt 0 ]; do
  case "$1" in
    --llm) LLM=$(cd "$2" && pwd); shift 2 ;;
    *) echo "usage: $0 [--llm DIR]" >&2; exit 2 ;;
  esac
done
for need in "$KWS" "$CLIP"; do
  [ -e "$need" ] || { echo "check_wheel: $need not found (set ASSISTANT_SHARED)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo "check_wheel: $*" >&2; }

# Build from a copy of the tracked (and new, not ignored) files, so the checkout gets no build/ or egg-info.
step "building the wheel"
mkdir "$WORK/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >/dev/null
WHEEL=$(ls "$WORK"/dist/edge_assistant-*.whl)

# The dependencies as the wheel declares them, from a local wheelhouse that a first run fills from PyPI
# (resolving against the index costs ~30 s a run even with pip's cache warm; installing from files ~10 s).
step "installing $(basename "$WHEEL") into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
install() { "$WORK/venv/bin/pip" install -q --no-index --find-links "$WHEELHOUSE" "$WHEEL" >"$WORK/pip.log" 2>&1; }
if ! install; then
  step "filling the wheelhouse $WHEELHOUSE from the package index"
  mkdir -p "$WHEELHOUSE"
  "$WORK/venv/bin/pip" download -q -d "$WHEELHOUSE" "$WHEEL" >"$WORK/pip.log" 2>&1 \
    || { grep -v "^WARNING: Location" "$WORK/pip.log" >&2; exit 1; }
  rm -f "$WHEELHOUSE"/edge_assistant-*.whl
  install || { grep -v "^WARNING: Location" "$WORK/pip.log" >&2; exit 1; }
fi

if [ -z "$LLM" ]; then
  step "exporting the tiny reference LLM"
  LLM=$WORK/llm
  (cd "$REPO" && "$PYTHON" -m export.cli "$SHARED/reference/minimind2/minimind2-dense-tiny-random.pth" \
    --out "$LLM" --quant int8 --tokenizer "$SHARED/assets/minimind-tokenizer/minimind2" >/dev/null 2>&1)
fi

# From here on nothing of the checkout is reachable: another folder, no PYTHONPATH, the venv's own python.
mkdir "$WORK/run"
cd "$WORK/run"
unset PYTHONPATH
export PATH="$WORK/venv/bin:$PATH"
where=$(python -c 'import assistant; print(assistant.__file__)')
case "$where" in
  "$WORK/venv/"*) ;;
  *) echo "check_wheel: assistant imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac

step "assistant models list"
assistant models list >"$WORK/models.txt"
grep -q "kws-en" "$WORK/models.txt" || { cat "$WORK/models.txt"; echo "check_wheel: kws-en not listed" >&2; exit 1; }

step "assistant install-service --dry-run"
assistant install-service --dry-run >"$WORK/unit.txt"
grep -qx "ExecStart=$WORK/venv/bin/assistant run" "$WORK/unit.txt" \
  && grep -qx "WorkingDirectory=$WORK/run" "$WORK/unit.txt" \
  || { cat "$WORK/unit.txt"; echo "check_wheel: unexpected unit" >&2; exit 1; }

step "assistant example"
assistant example config --out config.yaml >/dev/null
assistant example keywords-en --out keywords.txt >/dev/null

step "assistant --input $(basename "$CLIP")"
assistant --config config.yaml --keywords keywords.txt --kws-model "$KWS" --llm-model "$LLM" \
  --input "$CLIP" --json >"$WORK/events.jsonl" 2>"$WORK/stderr.txt" \
  || { tail -20 "$WORK/stderr.txt"; echo "check_wheel: the daemon failed" >&2; exit 1; }
python - "$WORK/events.jsonl" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
kinds = [e["event"] for e in events]
missing = [k for k in ("wake", "final", "reply") if k not in kinds]
if missing:
    sys.exit(f"check_wheel: no {missing} event from the installed daemon: {kinds}")
final = next(e for e in events if e["event"] == "final")
print(f"check_wheel: ok ({len(events)} events; heard {final.get('text', '')!r})")
PY
