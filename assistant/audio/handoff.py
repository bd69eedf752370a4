"""Audio chunks from a reader thread (stdin's, PortAudio's callback) to the event loop, held back while quiet.

Why: fed in real time, every 100 ms chunk used to cross from a thread to the loop on its own: a thread switch,
a self-pipe write and an epoll wake-up each, plus an executor hop per stdin read. In a quiet room that
plumbing was most of the daemon's idle cost (0.7-1.3 % of a core; the silence gate itself, one RMS per chunk,
~0.01 %). So the reader thread cuts the chunks itself and hands them over here, and:

- while the consumer says quiet chunks can wait (`hold_quiet_db` is a number: the daemon is idle behind a
  closed energy gate), quiet chunks are held and handed over HOLD_S of audio at a time: the loop wakes once a
  second instead of once per chunk (ten times with 100 ms chunks, twenty with 50 ms);
- a chunk that stands out from the room (`Onset`: `hold_quiet_db` above a noise floor kept like the gate's)
  goes at once, with everything held before it. The gate on the loop opens only on such chunks, so it does
  not open late (were the two floors apart, e.g. after a long reply, by at most HOLD_S); when it opens,
  the daemon sets `hold_quiet_db` to None, which hands over anything held since and lets a paused reader
  (`pause`) read on at once;
- `hold_quiet_db` None: every chunk goes at once, as before (listening, thinking, speaking, no energy gate).

The consumer sees every chunk, in order, with its input time stamp; only *when* quiet chunks arrive changes,
so what the gate and the spotter decide is the same. The loop is woken only when it waits for audio: a chunk
handed over while it is busy is simply there at its next `get()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, AudioChunk

# Both in audio time, not chunks, so the idle path is the same whatever audio.block_ms cuts the input into.
HOLD_S = 1.0  # seconds of quiet audio held at most (10 chunks of 100 ms, 20 of 50 ms)
FLOOR_RISE_DB_PER_S = 2.0  # the energy gate's default rise: the onset floor's climb in a louder room


class Onset:
    """Is this chunk louder than the room? Its RMS in dB against a floor that moves halfway to a quieter chunk
    and climbs FLOOR_RISE_DB_PER_S times the chunk's length: the energy gate's rule (wake/gate.py, on its 100 ms
    blocks) without its lower bound, so fed the same audio in 100 ms chunks this floor is never above the gate's
    (shorter chunks' levels spread wider, and it follows their quieter ones down), and with a threshold a
    little under the gate's open_db, a chunk that could open the gate is loud here too. (Pink room noise at
    -55 dBFS, four 2-minute seeds, 100 ms chunks: 0.25-0.9 % of chunks are 7 dB above this floor, each one
    costing the loop one extra wake-up.)"""

    def __init__(self) -> None:
        self.floor_db: float | None = None

    def above_floor(self, samples: np.ndarray) -> float:
        """dB of this chunk above the floor (0 when it is the floor); the floor follows it."""
        power = float(np.dot(samples, samples)) / len(samples) if len(samples) else 0.0
        level = 10.0 * math.log10(power) if power > 1e-10 else -100.0
        if self.floor_db is None:
            floor = level
        elif level < self.floor_db:
            floor = self.floor_db + 0.5 * (level - self.floor_db)
        else:
            floor = min(level, self.floor_db + FLOOR_RISE_DB_PER_S * len(samples) / SAMPLE_RATE)
        self.floor_db = floor
        return level - floor


class Handoff:
    """The queue between one reader thread (`put`, `end`) and the event loop (`get`).

    `max_chunks` bounds what waits for the loop: past it, `drop=True` (a microphone: its callback must never
    block) drops the oldest chunks and counts them in `dropped`; `drop=False` (stdin) makes `put` wait, so the
    pipe's writer is slowed down instead. `close()` (any thread) ends both sides at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_chunks: int, drop: bool) -> None:
        self._loop = loop
        self._max = max_chunks
        self._drop = drop
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # put() waits on it for the loop to take chunks
        self._ready: collections.deque[AudioChunk] = collections.deque()  # handed over, not yet taken
        self._held: list[AudioChunk] = []  # quiet chunks the reader keeps for now
        self._held_samples = 0  # their length
        self._onset = Onset()
        self._unheld = threading.Event()  # set while nothing is held back (pause() returns at once then)
        self._unheld.set()
        self._waiter: asyncio.Future[None] | None = None  # set while the loop waits in get()
        self._ended = False
        self._error: BaseException | None = None
        self._closed = False
        self._hold_quiet_db: float | None = None
        self.dropped = 0  # chunks dropped because the loop fell behind (drop=True)
        self.chunks = 0  # chunks handed to the loop
        self.handovers = 0  # times chunks were handed to the loop (per chunk when nothing is held)
        self.wakeups = 0  # times the reader woke the loop (only when it was waiting for audio)

    @property
    def hold_quiet_db(self) -> float | None:
        """dB above the room's floor from which a chunk goes at once; None: every chunk goes at once."""
        return self._hold_quiet_db

    @hold_quiet_db.setter
    def hold_quiet_db(self, value: float | None) -> None:  # by the consumer, on the loop
        before, self._hold_quiet_db = self._hold_quiet_db, value
        if value is None and before is not None:
            self._unheld.set()
            if self._held:
                self.flush()
        elif value is not None and before is None:
            self._unheld.clear()

    # -- the reader's side (its own thread) ------------------------------------------------------------------

    def put(self, chunks: list[AudioChunk]) -> bool:
        """Chunks in input order, from the reader thread; may wait for room (drop=False). True when one of
        them stood out from the room (it went at once)."""
        if not chunks:
            return False
        above_db = self._hold_quiet_db
        with self._lock:
            loud = False
            for chunk in chunks:
                # The floor follows every chunk, held or not, so it is the room's when holding starts.
                rise_db = self._onset.above_floor(chunk.samples)
                loud = loud or (above_db is not None and rise_db > above_db)
                self._held.append(chunk)
                self._held_samples += len(chunk.samples)
            if above_db is None or loud or self._held_samples >= HOLD_S * SAMPLE_RATE:
                self._hand_over()
            if not self._drop:
                while len(self._ready) > self._max and not self._closed:
                    self._room.wait()
        return loud

    def flush(self) -> None:
        """Hand over whatever is held now and wake the loop if it waits (any thread): the consumer wants every
        chunk now, or the stream failed and the consumer must hear of it."""
        with self._lock:
            self._hand_over()

    def end(self, error: BaseException | None = None) -> None:
        """End of input (reader thread): what is held goes first, then `get` returns None (or raises `error`)."""
        with self._lock:
            self._ended = True
            self._error = error
            self._hand_over()

    def _hand_over(self) -> None:  # with the lock held
        self.chunks += len(self._held)
        self._ready.extend(self._held)
        self._held.clear()
        self._held_samples = 0
        self.handovers += 1
        if self._drop:
            while len(self._ready) > self._max:
                self._ready.popleft()
                self.dropped += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self.wakeups += 1
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutting down): nobody to wake
                self._loop.call_soon_threadsafe(_wake, waiter)

    # -- the loop's side ----------------------------------------------------------------------------------

    async def get(self) -> list[AudioChunk] | None:
        """Every chunk handed over so far, waiting for the reader if there is none; [] when the reader woke us
        with nothing (flush() of a failed stream); None at the end of input or after close(). Raises the
        reader's error once the chunks before it were taken."""
        with self._lock:
            waiter = None
            if not (self._ready or self._closed or self._ended):
                waiter = self._waiter = self._loop.create_future()
        if waiter is not None:
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None
        with self._lock:
            if self._ready:
                chunks = list(self._ready)
                self._ready.clear()
                self._room.notify()
                return chunks
            if self._closed or self._ended:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                return None
            return []

    @property
    def backlog(self) -> int:
        """Chunks handed over that the loop has not taken yet."""
        return len(self._ready)

    def summary(self) -> str:
        """For the source's last log line: how often the loop was woken for how much audio."""
        return f"{self.chunks} chunks in {self.handovers} handovers, {self.wakeups} loop wake-ups"

    def pause(self, seconds: float) -> None:
        """Wait up to `seconds` while quiet chunks may be held (reader thread; stdin reads less often then,
        the pipe keeps the audio meanwhile). Returns at once when holding ends or on close()."""
        self._unheld.wait(seconds)

    def close(self) -> None:
        """Stop both sides (any thread): a waiting put() returns, get() returns None."""
        with self._lock:
            self._closed = True
            self._room.notify_all()
            self._unheld.set()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class HoldsQuietChunks:
    """What a source that reads on a thread through a Handoff (`self._handoff`, made when iterated) offers its
    consumer: the `hold_quiet_db` knob (kept until the handoff exists) and the `backlog`."""

    _handoff: Handoff | None = None
    _hold_quiet_db: float | None = None

    @property
    def hold_quiet_db(self) -> float | None:
        return self._hold_quiet_db

    @hold_quiet_db.setter
    def hold_quiet_db(self, value: float | None) -> None:
        self._hold_quiet_db = value
        if self._handoff is not None:
            self._handoff.hold_quiet_db = value

    @property
    def backlog(self) -> int:
        """Chunks read and handed over that the consumer has not taken yet."""
        return self._handoff.backlog if self._handoff is not None else 0
