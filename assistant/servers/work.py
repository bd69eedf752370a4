"""Model work for network clients: admitted or refused at once, run on its own pool, behind the voice loop.

Why a separate pool and a gate rather than the daemon's executor: the daemon's pool has a few workers that the
wake word, recognizer, LLM and TTS of the *voice* path share; a queue of network jobs in it would sit between a
spoken question and its answer. Network jobs instead run on `limits.workers` threads of their own (1 by
default), so at most that many run beside the voice loop, and only `limits.queue` more may wait; the next one
is refused with 503 at once (429 when one client already has `limits.per_client` jobs). The models themselves
are shared: onnxruntime sessions and sherpa-onnx recognizers take concurrent calls on separate streams.

Sharing the CPU is the gate's job: while the voice loop is THINKING or SPEAKING (hub.VOICE_BUSY), a network job
pauses between two steps (a token, an audio block, a sentence) until the loop is idle again, at most
`limits.voice_hold_s` per pause, so a stuck state cannot hold network clients forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from assistant.settings import ServerLimits

log = logging.getLogger(__name__)

T = TypeVar("T")


class Busy(Exception):
    """A job refused at admission: `status` 429 (this client's limit) or 503 (the queue is full)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class VoiceGate:
    """Open while the voice loop is idle; network jobs wait at `hold` while it is closed."""

    def __init__(self, hold_s: float) -> None:
        self._idle = threading.Event()
        self._idle.set()
        self.hold_s = hold_s
        self.held_s = 0.0  # total seconds network jobs spent waiting for the voice loop

    def voice(self, busy: bool) -> None:
        if busy:
            self._idle.clear()
        else:
            self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def hold(self, cancel: threading.Event | None = None) -> None:
        """Block (in a worker thread) while the voice loop is busy, up to hold_s, or until `cancel`."""
        if self._idle.is_set():
            return
        started = time.monotonic()
        deadline = started + self.hold_s
        while not self._idle.wait(0.05):
            if (cancel is not None and cancel.is_set()) or time.monotonic() >= deadline:
                break
        self.held_s += time.monotonic() - started


class ModelWork:
    """Admission (bounded queue, per-client limit) and the pool that runs network clients' model calls."""

    def __init__(self, limits: ServerLimits, gate: VoiceGate) -> None:
        self.limits = limits
        self.gate = gate
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="assistant-server")
        self._capacity = limits.workers + limits.queue
        self._jobs = 0
        self._clients: Counter[str] = Counter()
        self.done = 0
        self.refused: Counter[int] = Counter()

    @property
    def jobs(self) -> int:
        """Jobs running or queued now."""
        return self._jobs

    @contextlib.contextmanager
    def ticket(self, client: str) -> Iterator[None]:
        """Admit one job of `client` for the `with` block, or raise Busy at once (called on the event loop)."""
        if self._clients[client] >= self.limits.per_client:
            self.refused[429] += 1
            raise Busy(429, f"too many requests at once from {client} (servers.limits.per_client = "
                            f"{self.limits.per_client}); retry when one has finished")
        if self._jobs >= self._capacity:
            self.refused[503] += 1
            raise Busy(503, f"busy: {self._jobs} requests running or queued (servers.limits.workers + queue = "
                            f"{self._capacity}); retry shortly")
        self._jobs += 1
        self._clients[client] += 1
        try:
            yield
        finally:
            self._jobs -= 1
            self._clients[client] -= 1
            if self._clients[client] <= 0:
                del self._clients[client]
            self.done += 1

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the servers' pool (after the voice loop, if it is busy)."""
        def gated() -> T:
            self.gate.hold()
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, gated)

    async def iterate(
        self, produce: Callable[[threading.Event], Iterator[T]], cancel: threading.Event | None = None
    ) -> AsyncIterator[T]:
        """Items of `produce(cancel)` run on the pool, pausing for the voice loop between two items.

        Leaving the `async for` early (a client gone, an exception, a cancelled task) sets `cancel`, which the
        producer checks between steps (Conversation.stream hands it to the model's loop).
        """
        loop = asyncio.get_running_loop()
        cancel = cancel or threading.Event()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def run() -> None:
            try:
                self.gate.hold(cancel)
                for item in produce(cancel):
                    loop.call_soon_threadsafe(items.put_nowait, ("item", item))
                    if cancel.is_set():
                        break
                    self.gate.hold(cancel)
                loop.call_soon_threadsafe(items.put_nowait, ("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which raises it to the caller
                loop.call_soon_threadsafe(items.put_nowait, ("error", exc))

        worker = loop.run_in_executor(self._pool, run)
        try:
            while True:
                kind, value = await items.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                yield value
        finally:
            cancel.set()
            # The worker sees `cancel` within a step; never wait forever on a wedged model call.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(worker), 5.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
