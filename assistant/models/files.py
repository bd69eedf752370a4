"""Locate the files of a sherpa-onnx streaming transducer (encoder, decoder, joiner, tokens) in a directory.

Upstream releases name their files differently (`encoder-epoch-12-avg-2-chunk-16-left-64.int8.onnx`,
`encoder-epoch-99-avg-1.onnx`, ...), so the files are found by prefix rather than configured one by one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransducerFiles:
    """Paths of one streaming transducer model, as KeywordSpotter / OnlineRecognizer want them."""

    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path
    bpe_model: Path | None = None
    """`bpe.model` (sentencepiece) when the release ships one: the exact text -> BPE-piece encoder."""


def _fetch_hint(model_name: str) -> str:
    return f"run `assistant models fetch {model_name}`"


def _pick(directory: Path, prefix: str, model_name: str, *, prefer_int8: bool) -> Path:
    candidates = sorted(p for p in directory.glob(f"{prefix}*.onnx") if p.is_file())
    if not candidates:
        raise ModelError(
            f"model {model_name!r}: no {prefix}*.onnx in {directory}; {_fetch_hint(model_name)}"
        )
    int8 = [p for p in candidates if ".int8." in p.name]
    full = [p for p in candidates if ".int8." not in p.name]
    # int8 encoder/joiner are ~4x smaller and as accurate here; the decoder is tiny and its int8 variant
    # loses accuracy upstream (sherpa-onnx's own examples pair an fp32 decoder with int8 encoder/joiner).
    ordered = (int8 + full) if prefer_int8 else (full + int8)
    chosen = ordered[0]
    same_kind = int8 if chosen in int8 else full
    if len(same_kind) > 1:
        log.warning("model %s: several %s files, using %s (others: %s)", model_name, prefix, chosen.name,
                    ", ".join(p.name for p in same_kind[1:]))
    return chosen


def find_transducer(directory: Path, model_name: str) -> TransducerFiles:
    """Find encoder/decoder/joiner/tokens.txt (and bpe.model if present) in `directory`.

    Raises ModelError naming the missing path and the fetch command for `model_name`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model {model_name!r}: directory {directory} not found; {_fetch_hint(model_name)}")
    tokens = directory / "tokens.txt"
    if not tokens.is_file():
        raise ModelError(f"model {model_name!r}: {tokens} not found; {_fetch_hint(model_name)}")
    bpe = directory / "bpe.model"
    return TransducerFiles(
        encoder=_pick(directory, "encoder", model_name, prefer_int8=True),
        decoder=_pick(directory, "decoder", model_name, prefer_int8=False),
        joiner=_pick(directory, "joiner", model_name, prefer_int8=True),
        tokens=tokens,
        bpe_model=bpe if bpe.is_file() else None,
    )
