"""The daemon's event vocabulary: what happened, when (seconds of input audio), and the datum that matters.

`t` is always seconds of audio since the start of the input (not wall time), so a file run gives the same
timeline as a live one and tests can compare against positions in the clip. `to_json()` is one line of
`--json` output: {"event": NAME, "t": SECONDS, ...fields}.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    t: float  # seconds of input audio since the start of the input

    def to_json(self) -> str:
        body = {"event": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            body[f.name] = round(value, 3) if isinstance(value, float) else value
        return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True)
class Wake(Event):
    name: ClassVar[str] = "wake"
    label: str  # the keyword's @label (or its text when it has none)
    keyword: str  # the keyword as written in the keywords file
    t_end: float  # seconds: where the ASR starts reading (end of the keyword)


@dataclass(frozen=True)
class Partial(Event):
    name: ClassVar[str] = "partial"
    text: str  # the recognizer's current hypothesis for the utterance


@dataclass(frozen=True)
class Final(Event):
    name: ClassVar[str] = "final"
    text: str  # the utterance's transcript at the endpoint
    reason: str  # "endpoint", "max_length" or "end_of_input"


@dataclass(frozen=True)
class FirstToken(Event):
    name: ClassVar[str] = "first_token"
    latency_ms: float  # milliseconds of wall time from the endpoint to the first reply text


@dataclass(frozen=True)
class Reply(Event):
    name: ClassVar[str] = "reply"
    text: str  # the whole reply
    latency_ms: float  # milliseconds of wall time from the endpoint to the end of the reply
    # The intent that answered (a Home Assistant name such as HassStartTimer, or the assistant's own such as
    # EdgeArithmetic), or None when the language model answered.
    intent: str | None = None


@dataclass(frozen=True)
class StateChange(Event):
    name: ClassVar[str] = "state"
    state: str  # the state entered: idle, listening, thinking, speaking
    previous: str  # the state left


@dataclass(frozen=True)
class Error(Event):
    name: ClassVar[str] = "error"
    stage: str  # where it failed: wake, asr, llm, tts, audio
    message: str  # what went wrong, for a human


@dataclass(frozen=True)
class Interrupted(Event):
    name: ClassVar[str] = "interrupted"
    by: str  # "stop" (a stop phrase: back to idle) or "wake" (a wake word: a new turn starts)
    label: str  # the stop phrase's or wake word's label
    state: str  # what was cut off: thinking or speaking
    question: str  # the utterance that was being answered
    reply: str  # the reply text generated up to the cut (not kept in the history)


@dataclass(frozen=True)
class TimerEvent(Event):
    """What every timer event says about its timer; the subclasses add only what differs."""

    name: ClassVar[str] = "timer"
    id: str  # timer-3, alarm-4
    label: str  # what the announcement will say ("5 minute", "pasta", "7:30 AM")
    due: str  # local ISO 8601 time it ends
    kind: str = "timer"  # timer or alarm


@dataclass(frozen=True)
class TimerStarted(TimerEvent):
    name: ClassVar[str] = "timer_started"


@dataclass(frozen=True)
class TimerFinished(TimerEvent):
    name: ClassVar[str] = "timer_finished"
    missed: bool = False  # it ended while the assistant was not running (announced once, at start)
    text: str = ""  # the announcement


@dataclass(frozen=True)
class TimerCancelled(TimerEvent):
    name: ClassVar[str] = "timer_cancelled"
