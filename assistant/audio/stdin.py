"""stdin as an audio byte stream that can be closed from another thread (see StdinPump)."""

from __future__ import annotations

import os
import queue
import threading
from typing import BinaryIO


class StdinPump:
    """stdin read by a daemon thread, handed out through `read(n)` (the stream PcmStreamSource reads).

    PcmStreamSource reads in an executor thread, and asyncio.run waits for those threads on the way out: a
    read blocked on a pipe whose writer (`arecord | assistant --input -`) is open but quiet never returns, so
    SIGTERM hung until systemd's TimeoutStopSec killed us. close() ends a pending read() with EOF at once; the
    thread stuck in the real read is a daemon thread and does not hold the process.
    """

    def __init__(self, stream: BinaryIO, max_queued: int = 64) -> None:
        self._stream = stream
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max_queued)  # back-pressure like the pipe's
        self._buffer = b""
        self._closed = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._pump, name="stdin-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        # The raw fd, not the buffered object: at interpreter exit Python takes the BufferedReader's lock to
        # close it, and a daemon thread parked inside read1() holds that lock ("Fatal Python error").
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        while not self._closed.is_set():
            try:
                data = os.read(fd, 65536) if fd is not None else self._stream.read(65536)
            except (OSError, ValueError) as exc:
                # A dead recorder (EIO) is not a clean end of input: read() re-raises it in the reader.
                self._error = exc
                data = b""
            while not self._closed.is_set():
                try:
                    self._queue.put(data, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not data:
                return

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (fewer when that is what has arrived); b"" at end of input or after close()."""
        while not self._buffer:
            if self._closed.is_set():
                return b""
            try:
                self._buffer = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._buffer:
                self._closed.set()
                if self._error is not None:
                    raise OSError(f"{self._error}") from self._error
                return b""
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        self._closed.set()
