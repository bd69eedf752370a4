"""stdin as an audio byte stream, read on a thread of its own that a close() lets go of (see StdinPump)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import BinaryIO

READ_BYTES = 65536  # at most this much per read (2 s of 16 kHz s16le)


class StdinPump:
    """stdin read by a daemon thread that hands every read to `on_data(bytes)`, then calls `on_end(error)` once.

    A daemon thread, not an executor: asyncio.run waits for executor threads on the way out, and a read blocked
    on a pipe whose writer (`arecord | assistant --input -`) is open but quiet never returns, so SIGTERM used to
    hang until systemd's TimeoutStopSec killed us. A thread stuck in the real read does not hold the process;
    close() tells it to hand nothing more over. The callbacks run on this thread (PcmStreamSource cuts the
    chunks there and passes them to the loop through an audio.handoff.Handoff).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_data: Callable[[bytes], None], on_end: Callable[[Exception | None], None]) -> None:
        self._thread = threading.Thread(target=self._pump, args=(on_data, on_end), name="stdin-reader",
                                        daemon=True)
        self._thread.start()

    def _pump(self, on_data: Callable[[bytes], None], on_end: Callable[[Exception | None], None]) -> None:
        # The raw fd, not the buffered object: at interpreter exit Python takes the BufferedReader's lock to
        # close it, and a daemon thread parked inside read1() holds that lock ("Fatal Python error").
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        while not self._closed.is_set():
            try:
                data = os.read(fd, READ_BYTES) if fd is not None else self._stream.read(READ_BYTES)
            except (OSError, ValueError) as exc:
                # A dead recorder (EIO) is not a clean end of input: the reader of the chunks gets the error.
                on_end(exc)
                return
            if self._closed.is_set():
                return
            if not data:
                on_end(None)
                return
            try:
                on_data(data)
            except Exception as exc:  # noqa: BLE001 - a bug in the cutting must end the input, not hang it
                on_end(exc)
                return

    def close(self) -> None:
        self._closed.set()
