"""`assistant keywords record LABEL`: prompt, listen, cut one take per prompt, check it, save it as a positive.

A take starts when the level rises 12 dB over the room's floor (measured over the first half second) and ends
after 0.7 s back near the floor. A clipped take, one shorter than 0.2 s or silence for 8 s is refused with the
reason and asked for again. Works from the microphone, a file or stdin (`-`), so it can be tested without a mic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk
from assistant.audio.sources import open_source
from assistant.errors import AudioError, ConfigError
from assistant.settings import Settings
from assistant.wake.gate import block_dbfs
from assistant.wake.samples import label_key

START_DB = 12.0  # above the floor: speech has begun
END_DB = 6.0  # within this of the floor for END_S: the take is over
END_S = 0.7
PRE_S = 0.3  # kept before the start, so the first consonant is in the take
MIN_TAKE_S = 0.2
MAX_TAKE_S = 4.0
WAIT_S = 8.0  # silence this long after a prompt: "heard nothing"
CLIP = 0.99


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _meter(level_db: float) -> None:
    if sys.stderr.isatty():
        bars = int(max(0.0, min(40.0, (level_db + 70) / 70 * 40)))
        sys.stderr.write(f"\r  level {'|' * bars:40s} {level_db:6.1f} dBFS")
        sys.stderr.flush()


async def _takes(chunks: AsyncIterator[AudioChunk], count: int, label: str) -> list[np.ndarray]:
    """Cut up to `count` accepted takes from the stream (fewer if it ends first)."""
    floor_blocks: list[float] = []
    takes: list[np.ndarray] = []
    pre: list[np.ndarray] = []
    current: list[np.ndarray] | None = None
    quiet_s = waited_s = 0.0
    prompted = False
    async for chunk in chunks:
        level = block_dbfs(chunk.samples)
        _meter(level)
        if len(floor_blocks) < 5:  # the first half second: the room without speech
            floor_blocks.append(level)
            continue
        floor = max(-75.0, float(np.median(floor_blocks)))
        if not prompted:
            _say(f"\nsay {label!r} now (take {len(takes) + 1} of {count})")
            prompted, waited_s = True, 0.0
        seconds = len(chunk.samples) / SAMPLE_RATE
        if current is None:
            pre = (pre + [chunk.samples])[-max(1, int(PRE_S / seconds)):]
            waited_s += seconds
            if level > floor + START_DB:
                current, quiet_s = list(pre), 0.0
            elif waited_s > WAIT_S:
                _say(f"heard nothing in {WAIT_S:g} s (room at {floor:.0f} dBFS): speak closer or louder")
                prompted = False
            continue
        current.append(chunk.samples)
        quiet_s = quiet_s + seconds if level < floor + END_DB else 0.0
        length = sum(len(c) for c in current) / SAMPLE_RATE
        if quiet_s < END_S and length < MAX_TAKE_S:
            continue
        take = np.concatenate(current)
        current, pre, prompted = None, [], False
        problem = _problem(take, quiet_s)
        if problem:
            _say(f"take refused: {problem}; again")
            continue
        takes.append(take)
        _say(f"take {len(takes)} kept ({len(take) / SAMPLE_RATE:.1f} s, peak {np.max(np.abs(take)):.2f})")
        if len(takes) == count:
            break
    return takes


def _problem(take: np.ndarray, quiet_s: float) -> str | None:
    if np.max(np.abs(take)) >= CLIP:
        return "clipped (too loud: move back or turn the input gain down)"
    if len(take) / SAMPLE_RATE - quiet_s - PRE_S < MIN_TAKE_S:
        return "too short (a click or a cough?)"
    return None


def record_takes(args: argparse.Namespace, settings: Settings) -> int:
    if args.count < 1:
        raise ConfigError(f"--count {args.count}: must be at least 1")
    folder = Path(args.out) / label_key(args.label)
    device = int(args.device) if isinstance(args.device, str) and args.device.isdigit() else args.device
    source = open_source(str(args.input), block_ms=100, device=device, realtime=False)
    try:
        takes = asyncio.run(_takes(source.__aiter__(), args.count, args.label))
    finally:
        source.close()
    if not takes:
        raise AudioError(f"no usable take of {args.label!r} in {args.input}")
    folder.mkdir(parents=True, exist_ok=True)
    number = 1
    for take in takes:
        while (folder / f"{label_key(args.label)}-{number}.wav").exists():
            number += 1  # never overwrite an earlier session's takes
        path = folder / f"{label_key(args.label)}-{number}.wav"
        sf.write(str(path), take, SAMPLE_RATE, subtype="PCM_16")
        print(path)
    if len(takes) < args.count:
        _say(f"the input ended after {len(takes)} of {args.count} takes")
    return 0
