"""What the status page shows: the daemon's events, fanned out to SSE subscribers, the last exchanges, CPU and RSS.

The daemon calls `publish` (through its `emit` callable, beside the stdout writer) on the event loop; servers
never reach into the daemon's state. State changes also drive the VoiceGate (network jobs pause while the voice
loop is busy).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from assistant.events import Event, Final, FirstToken, Reply, StateChange
from assistant.servers.work import VoiceGate

log = logging.getLogger(__name__)

RECENT = 20  # exchanges kept for the page
# States in which network jobs pause: the reply is being written and spoken, where a spoken question's time to
# first token and the TTS are. LISTENING is left out: the streaming recognizer needs a fraction of a core in
# real time, and pausing network jobs for a whole utterance (several seconds each time) starved them for little.
VOICE_BUSY = ("thinking", "speaking")
SUBSCRIBER_QUEUE = 256  # events buffered per SSE client; a slower client loses the oldest


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class CpuMeter:
    """CPU use of this process since the previous reading, in percent of one core."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu())

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def read(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        wall = now - self._last[0]
        used = cpu - self._last[1]
        self._last = (now, cpu)
        return 100.0 * used / wall if wall > 0 else 0.0


class EventHub:
    """Fan-out of daemon events plus the page's memory of recent exchanges."""

    def __init__(self, gate: VoiceGate | None = None, *, voice: bool = True) -> None:
        self.gate = gate
        self.voice = voice  # False under `assistant serve`: no microphone, no voice loop
        self.state = "idle" if voice else "serving"
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._open: dict[str, Any] | None = None
        self._subscribers: set[asyncio.Queue[str]] = set()
        self.cpu = CpuMeter()
        self.started = time.time()

    # -- from the daemon (on the event loop) -----------------------------------------------------------

    def publish(self, event: Event) -> None:
        if isinstance(event, StateChange):
            self.state = event.state
            if self.gate is not None:
                self.gate.voice(event.state in VOICE_BUSY)
        elif isinstance(event, Final) and event.text:
            self._open = {"source": "voice", "wall": time.strftime("%H:%M:%S"), "heard": event.text,
                          "reply": None, "first_token_ms": None, "reply_ms": None}
            self.recent.appendleft(self._open)
        elif isinstance(event, FirstToken) and self._open is not None:
            self._open["first_token_ms"] = round(event.latency_ms, 1)
        elif isinstance(event, Reply) and self._open is not None:
            self._open["reply"] = event.text
            self._open["reply_ms"] = round(event.latency_ms, 1)
            self._open = None
        self._send(event.to_json())

    __call__ = publish  # usable as the daemon's emit callable

    def record(self, source: str, heard: str, reply: str, first_token_ms: float | None, reply_ms: float) -> None:
        """An exchange that did not come from the microphone (API, Wyoming handle)."""
        item = {"source": source, "wall": time.strftime("%H:%M:%S"), "heard": heard, "reply": reply,
                "first_token_ms": None if first_token_ms is None else round(first_token_ms, 1),
                "reply_ms": round(reply_ms, 1)}
        self.recent.appendleft(item)
        self._send(json.dumps({"event": "exchange", **item}, ensure_ascii=False))

    # -- to the page --------------------------------------------------------------------------------------

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        return {
            "state": self.state,
            "voice": self.voice,
            "recent": list(self.recent),
            "cpu_percent": round(self.cpu.read(), 1),
            "rss_mb": round(rss_bytes() / 1e6, 1),
            "uptime_s": round(time.time() - self.started),
            **extra,
        }

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._subscribers.discard(queue)

    def _send(self, line: str) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                queue.get_nowait()  # a slow page loses the oldest event, never blocks the daemon
            queue.put_nowait(line)


def fan_out(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    """One emit callable that hands each event to every sink (the daemon isolates a failing emit as a whole,
    so each sink is isolated here too: a broken page never silences stdout)."""

    def emit(event: Event) -> None:
        for sink in sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001
                log.exception("event sink %r failed on %s", sink, event.name)

    return emit
