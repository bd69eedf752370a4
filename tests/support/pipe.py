"""The idle path of assistant/audio/handoff.py under test, shared by tests/test_idle_path.py and
tests/test_block_size.py: a stdin source on a real pipe that reports when the daemon first lets it hold quiet
chunks back, and a feeder of quiet chunks into a Handoff."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np

from assistant.audio.sources import PcmStreamSource
from tests.conftest import DAEMON_TIMEOUT_S, build_daemon

WRITE = 2 * 1600  # bytes of s16le in 100 ms: a recorder's writes, whatever the daemon's block


class WatchedPipeSource(PcmStreamSource):
    """stdin on a pipe (in `block_ms` chunks, or the source's default); `holding` is set once the daemon first
    lets quiet chunks be held."""

    def __init__(self, stream: Any, block_ms: int | None = None) -> None:
        if block_ms is None:
            super().__init__(stream)
        else:
            super().__init__(stream, block_ms=block_ms)
        self.holding = threading.Event()

    @property
    def hold_quiet_db(self) -> float | None:
        return self._hold_quiet_db

    @hold_quiet_db.setter
    def hold_quiet_db(self, value: float | None) -> None:
        PcmStreamSource.hold_quiet_db.fset(self, value)  # type: ignore[attr-defined]
        if value is not None:
            self.holding.set()


async def feed_quiet(handoff: Any, quiet: list[Any]) -> list[list[Any]]:
    """Put `quiet` chunks into `handoff` one at a time; the batches it handed over meanwhile."""
    batches = []
    for chunk in quiet:
        handoff.put([chunk])
        if handoff.backlog:
            batches.append(await handoff.get())
    return batches


def run_on_pipe(models: Any, pcm: np.ndarray, block_ms: int | None = None) -> tuple[list[Any], Any, WatchedPipeSource]:
    """The live daemon reading int16 `pcm` from a real pipe (in `block_ms` blocks): the first 100 ms, then,
    once quiet chunks may be held, the rest in 100 ms writes as fast as the pipe takes them, then EOF."""
    read_fd, write_fd = os.pipe()
    data = pcm.tobytes()
    with os.fdopen(read_fd, "rb") as stream:
        source = WatchedPipeSource(stream, block_ms=block_ms)

        def writer() -> None:
            with os.fdopen(write_fd, "wb") as out:
                out.write(data[:WRITE])
                out.flush()
                # Bounded: if the daemon never holds (a regression), the rest still goes and the counts fail.
                source.holding.wait(DAEMON_TIMEOUT_S / 4)
                for i in range(WRITE, len(data), WRITE):
                    out.write(data[i : i + WRITE])

        thread = threading.Thread(target=writer, daemon=True)
        with build_daemon(models, live=True) as (daemon, events):
            thread.start()
            asyncio.run(asyncio.wait_for(daemon.run(source), DAEMON_TIMEOUT_S))
        thread.join(timeout=DAEMON_TIMEOUT_S)
    return events, daemon, source
