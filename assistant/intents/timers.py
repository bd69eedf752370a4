"""Timers and alarms: one book of them, saved atomically in the state directory, restored at start.

The book only keeps data and answers "what is due at time T"; it has no thread and no clock of its own. The
daemon owns the clock (wall time for a live source, the input's audio time for a file read as fast as
possible) and schedules the next due time on its event loop (loop.call_at), so a hundred timers cost one
TimerHandle. Times are epoch seconds.

The file (timers.json) is written to a temporary file in the same folder, flushed and fsynced, then moved over
the old one with os.replace: a crash or power cut leaves the old file or the new one, never half of one.
A timer whose end passed while the assistant was not running is handed back once by `restore` as missed (and
dropped from the file), so it is announced once, not at every start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

STATE_FILE = "timers.json"
FORMAT = 1


@dataclass(frozen=True)
class Timer:
    id: str
    kind: Literal["timer", "alarm"]
    label: str  # what the announcement says: the name ("pasta") or the duration ("5 minute")
    language: str  # en or zh: the announcement's language
    seconds: float  # the length it was set to (alarms: 0)
    due: float  # epoch seconds when it ends (a paused timer: when it would have ended at the pause)
    paused_left: float | None = None  # seconds left, while paused

    @property
    def paused(self) -> bool:
        return self.paused_left is not None

    def left(self, now: float) -> float:
        return self.paused_left if self.paused_left is not None else max(0.0, self.due - now)


class TimerBook:
    """The timers and alarms that are set; `path` None keeps them in memory only (assistant ask, tests)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._timers: dict[str, Timer] = {}
        self._next_id = 1

    # -- queries ----------------------------------------------------------------------------------------

    def all(self, kind: str | None = None) -> list[Timer]:
        timers = [t for t in self._timers.values() if kind is None or t.kind == kind]
        return sorted(timers, key=lambda t: (t.paused, t.due))

    def get(self, timer_id: str) -> Timer | None:
        return self._timers.get(timer_id)

    def next_due(self) -> float | None:
        running = [t.due for t in self._timers.values() if not t.paused]
        return min(running) if running else None

    def pop_due(self, now: float) -> list[Timer]:
        """Timers that have ended by `now` (earliest first), removed from the book and the file."""
        due = sorted((t for t in self._timers.values() if not t.paused and t.due <= now), key=lambda t: t.due)
        for timer in due:
            del self._timers[timer.id]
        if due:
            self.save()
        return due

    # -- changes ----------------------------------------------------------------------------------------

    def add(self, kind: Literal["timer", "alarm"], label: str, language: str, seconds: float, due: float) -> Timer:
        timer = Timer(id=f"{kind}-{self._next_id}", kind=kind, label=label, language=language, seconds=seconds,
                      due=due)
        self._next_id += 1
        self._timers[timer.id] = timer
        self.save()
        return timer

    def remove(self, timer_id: str) -> Timer | None:
        timer = self._timers.pop(timer_id, None)
        if timer is not None:
            self.save()
        return timer

    def pause(self, timer_id: str, now: float) -> Timer:
        timer = self._timers[timer_id]
        if not timer.paused:
            timer = dataclasses.replace(timer, paused_left=max(0.0, timer.due - now))
            self._timers[timer_id] = timer
            self.save()
        return timer

    def resume(self, timer_id: str, now: float) -> Timer:
        timer = self._timers[timer_id]
        if timer.paused_left is not None:
            timer = dataclasses.replace(timer, due=now + timer.paused_left, paused_left=None)
            self._timers[timer_id] = timer
            self.save()
        return timer

    def adjust(self, timer_id: str, delta_s: float, now: float) -> Timer:
        """Add (or with a negative delta, remove) time; never below zero left."""
        timer = self._timers[timer_id]
        if timer.paused_left is not None:
            timer = dataclasses.replace(timer, paused_left=max(0.0, timer.paused_left + delta_s))
        else:
            timer = dataclasses.replace(timer, due=max(now, timer.due + delta_s))
        self._timers[timer_id] = timer
        self.save()
        return timer

    # -- the state file -----------------------------------------------------------------------------------

    def save(self) -> None:
        if self.path is None:
            return
        body = {"format": FORMAT, "next_id": self._next_id,
                "timers": [dataclasses.asdict(t) for t in self._timers.values()]}
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        log.debug("saved %d timers to %s", len(self._timers), self.path)

    def restore(self, now: float) -> list[Timer]:
        """Load the file; return the timers that ended while nothing ran (removed: announced once)."""
        if self.path is None or not self.path.exists():
            return []
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            timers = [Timer(**_fields(raw)) for raw in body.get("timers", [])]
            next_id = int(body.get("next_id", 1))
        except (OSError, ValueError, TypeError) as exc:
            # A state file we cannot read must not stop the assistant: keep it aside for a human, start empty.
            aside = self.path.with_suffix(".unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("cannot read %s (%s); moved it to %s and started without timers", self.path, exc, aside)
            return []
        self._timers = {t.id: t for t in timers}
        self._next_id = max([next_id] + [_number(t.id) + 1 for t in timers])
        missed = sorted((t for t in timers if not t.paused and t.due <= now), key=lambda t: t.due)
        for timer in missed:
            del self._timers[timer.id]
        if missed:
            self.save()
        log.info("restored %d timers from %s (%d ended while stopped)", len(timers), self.path, len(missed))
        return missed


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(Timer)}
    return {k: v for k, v in raw.items() if k in names}


def _number(timer_id: str) -> int:
    tail = timer_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
