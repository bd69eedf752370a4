"""What each intent does. A handler reads the matched slots and the clock, changes the timer book if it must,
and returns the response key plus the slots its template renders; the words are in responses/*.yaml.

Own intent names (no Home Assistant intent exists for these): EdgeSetAlarm, EdgeCancelAlarm, EdgeArithmetic,
EdgeConvertUnit, EdgeWeekday; announcements use EdgeTimerFinished's templates.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assistant.intents.timers import Timer, TimerBook


@dataclass(frozen=True)
class Context:
    now: float  # epoch seconds, from the daemon's clock (audio time for a file input)
    book: TimerBook
    language: str
    timers_live: bool = True  # False in `assistant ask`: nothing would ever announce a timer set there


@dataclass(frozen=True)
class Outcome:
    key: str  # response key: "default", "no_timer", ...
    slots: dict[str, Any]
    started: tuple[Timer, ...] = ()
    cancelled: tuple[Timer, ...] = ()
    changed: tuple[Timer, ...] = field(default=())


# -- durations and labels -----------------------------------------------------------------------------------


def duration_text(seconds: float, language: str) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if language == "zh":
        parts = [f"{h}小时" if h else "", f"{m}分钟" if m else "", f"{s}秒" if s else ""]
        return "".join(parts) or "0秒"
    words = []
    for value, unit in ((h, "hour"), (m, "minute"), (s, "second")):
        if value:
            words.append(f"{value} {unit}{'' if value == 1 else 's'}")
    if not words:
        return "0 seconds"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _label_duration(seconds: float, language: str) -> str:
    """'5 minute' (a 5 minute timer) / '5分钟'."""
    text = duration_text(seconds, language)
    if language == "zh":
        return text
    return text.replace("hours", "hour").replace("minutes", "minute").replace("seconds", "second")


def _seconds(slots: dict[str, Any], prefix: str = "") -> float:
    return (float(slots.get(f"{prefix}hours", 0) or 0) * 3600 + float(slots.get(f"{prefix}minutes", 0) or 0) * 60
            + float(slots.get(f"{prefix}seconds", 0) or 0))


def _timer_view(timer: Timer, now: float, language: str) -> dict[str, Any]:
    return {"id": timer.id, "label": timer.label, "paused": timer.paused,
            "left": duration_text(math.ceil(timer.left(now)), language),
            "due": dt.datetime.fromtimestamp(timer.due)}


# -- timers ----------------------------------------------------------------------------------------------


def _select(ctx: Context, slots: dict[str, Any]) -> Timer | None:
    """The timer a command is about: by name, by its set length, else the one ending first."""
    timers = ctx.book.all("timer")
    name = str(slots.get("name", "")).strip().lower()
    if name:
        timers = [t for t in timers if t.label.lower() == name]
    start = _seconds(slots, "start_")
    if start:
        timers = [t for t in timers if abs(t.seconds - start) < 1]
    return timers[0] if timers else None


def start_timer(ctx: Context, slots: dict[str, Any]) -> Outcome:
    seconds = _seconds(slots)
    if seconds <= 0:
        return Outcome("no_duration", {})
    name = str(slots.get("name", "")).strip()
    label = name or _label_duration(seconds, ctx.language)
    if not ctx.timers_live:
        return Outcome("needs_daemon", {"duration": duration_text(seconds, ctx.language), "label": label})
    timer = ctx.book.add("timer", label, ctx.language, seconds, ctx.now + seconds)
    return Outcome("default", {"duration": duration_text(seconds, ctx.language), "label": label,
                               "command": slots.get("conversation_command")}, started=(timer,))


def cancel_timer(ctx: Context, slots: dict[str, Any]) -> Outcome:
    timer = _select(ctx, slots)
    if timer is None:
        return Outcome("no_timer", {})
    ctx.book.remove(timer.id)
    return Outcome("default", {"label": timer.label}, cancelled=(timer,))


def cancel_all_timers(ctx: Context, slots: dict[str, Any]) -> Outcome:
    timers = ctx.book.all("timer")
    for timer in timers:
        ctx.book.remove(timer.id)
    return Outcome("default" if timers else "no_timer", {"count": len(timers)}, cancelled=tuple(timers))


def timer_status(ctx: Context, slots: dict[str, Any]) -> Outcome:
    timers = ctx.book.all("timer")
    if not timers:
        return Outcome("no_timer", {})
    views = [_timer_view(t, ctx.now, ctx.language) for t in timers]
    return Outcome("default", {"timers": views, "next": views[0], "count": len(views)})


def pause_timer(ctx: Context, slots: dict[str, Any]) -> Outcome:
    timer = _select(ctx, slots)
    if timer is None:
        return Outcome("no_timer", {})
    timer = ctx.book.pause(timer.id, ctx.now)
    return Outcome("default", _timer_view(timer, ctx.now, ctx.language), changed=(timer,))


def unpause_timer(ctx: Context, slots: dict[str, Any]) -> Outcome:
    paused = [t for t in ctx.book.all("timer") if t.paused]
    timer = _select(ctx, slots) if (slots.get("name") or _seconds(slots, "start_")) else (paused or [None])[0]
    if timer is None:
        return Outcome("no_timer", {})
    timer = ctx.book.resume(timer.id, ctx.now)
    return Outcome("default", _timer_view(timer, ctx.now, ctx.language), changed=(timer,))


def _adjust(sign: int) -> Callable[[Context, dict[str, Any]], Outcome]:
    def handle(ctx: Context, slots: dict[str, Any]) -> Outcome:
        timer = _select(ctx, slots)
        if timer is None:
            return Outcome("no_timer", {})
        delta = _seconds(slots)
        timer = ctx.book.adjust(timer.id, sign * delta, ctx.now)
        view = _timer_view(timer, ctx.now, ctx.language)
        return Outcome("default", {**view, "delta": duration_text(delta, ctx.language)}, changed=(timer,))

    return handle


# -- alarms ---------------------------------------------------------------------------------------------


def _clock_text(hour: int, minute: int, language: str) -> str:
    if language == "zh":
        period = "凌晨" if hour < 5 else "早上" if hour < 9 else "上午" if hour < 12 else "中午" if hour < 13 \
            else "下午" if hour < 18 else "晚上"
        h12 = hour if hour <= 12 else hour - 12
        return f"{period}{h12}点" + (f"{minute:02d}分" if minute else "")
    h12 = 12 if hour % 12 == 0 else hour % 12
    return f"{h12}:{minute:02d} {'AM' if hour < 12 else 'PM'}"


def set_alarm(ctx: Context, slots: dict[str, Any]) -> Outcome:
    hour, minute = int(slots["hour"]), int(slots.get("minute", 0) or 0)
    period = slots.get("period")
    if period == "pm" and hour < 12:
        hour += 12
    elif period == "am" and hour == 12:
        hour = 0
    elif period == "noon" and hour < 11:
        hour += 12  # 中午1点
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return Outcome("bad_time", {})
    now = dt.datetime.fromtimestamp(ctx.now)
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    # "7 o'clock" with no am/pm: the next 7 o'clock (morning or evening) rather than tomorrow morning.
    candidates = [due + dt.timedelta(days=d, hours=h) for d in (0, 1) for h in ((0, 12) if period is None
                                                                                   and hour < 12 else (0,))]
    due = min(c for c in candidates if c > now)
    label = _clock_text(due.hour, due.minute, ctx.language)
    if not ctx.timers_live:
        return Outcome("needs_daemon", {"label": label})
    alarm = ctx.book.add("alarm", label, ctx.language, 0.0, due.timestamp())
    return Outcome("default", {"label": label, "tomorrow": due.date() != now.date(), "due": due}, started=(alarm,))


def cancel_alarm(ctx: Context, slots: dict[str, Any]) -> Outcome:
    alarms = ctx.book.all("alarm")
    for alarm in alarms:
        ctx.book.remove(alarm.id)
    return Outcome("default" if alarms else "no_alarm", {"count": len(alarms),
                                                         "labels": [a.label for a in alarms]},
                   cancelled=tuple(alarms))


# -- time, date, weekday -----------------------------------------------------------------------------------


def current_time(ctx: Context, slots: dict[str, Any]) -> Outcome:
    return Outcome("default", {"time": dt.datetime.fromtimestamp(ctx.now)})


def current_date(ctx: Context, slots: dict[str, Any]) -> Outcome:
    return Outcome("default", {"date": dt.datetime.fromtimestamp(ctx.now).date()})


def weekday(ctx: Context, slots: dict[str, Any]) -> Outcome:
    today = dt.datetime.fromtimestamp(ctx.now).date()
    if "relative_day" in slots:
        day = today + dt.timedelta(days=int(slots["relative_day"]))
        return Outcome("relative", {"date": day, "relative": int(slots["relative_day"])})
    try:
        year = int(slots.get("year") or today.year)
        day = dt.date(year, int(slots["month"]), int(slots["day"]))
    except (ValueError, KeyError):
        return Outcome("bad_date", {"month": slots.get("month"), "day": slots.get("day")})
    return Outcome("default", {"date": day, "past": day < today})


# -- arithmetic and units ---------------------------------------------------------------------------------


def number_text(value: float) -> str:
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def arithmetic(ctx: Context, slots: dict[str, Any]) -> Outcome:
    a, b, op = float(slots["a"]), float(slots["b"]), str(slots["op"])
    if op == "/" and b == 0:
        return Outcome("divide_by_zero", {"a": number_text(a)})
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.nan}[op]
    return Outcome("default", {"a": number_text(a), "b": number_text(b), "op": op, "result": number_text(result)})


# Factors to one base unit per dimension. A table, not `pint`: a dozen everyday units do not justify a
# dependency of pint's size on a Pi, and the names the user says live in the sentence files anyway.
UNITS: dict[str, tuple[str, float]] = {
    "km": ("length", 1000.0), "m": ("length", 1.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "mile": ("length", 1609.344), "yard": ("length", 0.9144), "foot": ("length", 0.3048), "inch": ("length", 0.0254),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "jin": ("mass", 0.5), "pound": ("mass", 0.45359237),
    "ounce": ("mass", 0.028349523125),
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "gallon": ("volume", 3.785411784),
    "celsius": ("temperature", 1.0), "fahrenheit": ("temperature", 1.0), "kelvin": ("temperature", 1.0),
}


def _to_celsius(value: float, unit: str) -> float:
    return {"celsius": value, "fahrenheit": (value - 32) * 5 / 9, "kelvin": value - 273.15}[unit]


def _from_celsius(value: float, unit: str) -> float:
    return {"celsius": value, "fahrenheit": value * 9 / 5 + 32, "kelvin": value + 273.15}[unit]


def convert_unit(ctx: Context, slots: dict[str, Any]) -> Outcome:
    value, source, target = float(slots["value"]), str(slots["from_unit"]), str(slots["to_unit"])
    (dim_a, factor_a), (dim_b, factor_b) = UNITS[source], UNITS[target]
    view = {"value": number_text(value), "from_unit": source, "to_unit": target}
    if dim_a != dim_b:
        return Outcome("incompatible", view)
    if dim_a == "temperature":
        result = _from_celsius(_to_celsius(value, source), target)
    else:
        result = value * factor_a / factor_b
    return Outcome("default", {**view, "result": number_text(round(result, 4 if abs(result) < 1000 else 2))})


HANDLERS: dict[str, Callable[[Context, dict[str, Any]], Outcome]] = {
    "HassGetCurrentTime": current_time,
    "HassGetCurrentDate": current_date,
    "HassStartTimer": start_timer,
    "HassCancelTimer": cancel_timer,
    "HassCancelAllTimers": cancel_all_timers,
    "HassTimerStatus": timer_status,
    "HassPauseTimer": pause_timer,
    "HassUnpauseTimer": unpause_timer,
    "HassIncreaseTimer": _adjust(+1),
    "HassDecreaseTimer": _adjust(-1),
    "EdgeSetAlarm": set_alarm,
    "EdgeCancelAlarm": cancel_alarm,
    "EdgeArithmetic": arithmetic,
    "EdgeConvertUnit": convert_unit,
    "EdgeWeekday": weekday,
}
