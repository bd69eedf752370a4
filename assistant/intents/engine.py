"""The intent layer: recognise a transcript with hassil, run its handler, render the reply.

`IntentEngine.answer(text, ctx)` returns an IntentReply (the reply text, the intent name, the timers it
started or cancelled) or None, and then the language model answers as before. It never raises for a bad
utterance: a handler or template failure is logged and the question goes to the model.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.intents import loader
from assistant.intents.handlers import HANDLERS, Context, Outcome
from assistant.intents.normalize import normalize
from assistant.intents.responses import Responses
from assistant.intents.timers import Timer

log = logging.getLogger(__name__)

FINISHED = "EdgeTimerFinished"  # the announcement's templates (keys: timer, alarm, timer_missed, alarm_missed)
_CJK_SPACE = re.compile(r"\s*([\u3400-\u9fff，。！？：；、])\s*")


@dataclass(frozen=True)
class IntentMatch:
    intent: str
    language: str  # en or zh
    style: str  # en, zh, pinyin: which recognizer output style it was read as
    slots: dict[str, Any]
    response: str  # the template's response key (Home Assistant's "response:" field)
    text: str  # the normalised text that matched


@dataclass(frozen=True)
class IntentReply:
    intent: str
    language: str
    text: str
    started: tuple[Timer, ...] = ()
    cancelled: tuple[Timer, ...] = ()
    changed: tuple[Timer, ...] = ()


class IntentEngine:
    """Compiled templates per language (plus a pinyin copy of the Chinese ones) and the response templates."""

    def __init__(self, languages: Iterable[str] = ("en", "zh"), custom_dir: Path | None = None,
                 *, pinyin: bool = True) -> None:
        """`pinyin`: with zh, also the pinyin copy (the Chinese KWS model as recognizer); `assistant ask` leaves
        out what the question's style does not need, to start faster."""
        from hassil import Intents

        started = time.perf_counter()
        self.languages = tuple(dict.fromkeys(loader.LANGUAGE_ALIASES[lang.lower()] for lang in languages))
        folders = [loader.SENTENCES_DIR]
        response_files = loader.sentence_files(loader.RESPONSES_DIR)
        if custom_dir is not None:
            if not custom_dir.is_dir():
                raise loader.IntentFileError(f"{custom_dir}: intents.custom_dir is not a folder")
            folders.append(custom_dir)
            response_files += loader.sentence_files(custom_dir)
        sources = loader.read_sentence_sources(folders)
        merged = loader.merge(self.languages, sources)
        self.responses = Responses()
        self.responses.load(response_files)
        self._check_answerable(sources)
        self._intents: dict[str, Any] = {}
        for language, data in merged.items():
            self._intents[language] = Intents.from_dict(data)
            if language == "zh" and pinyin:
                self._intents["pinyin"] = Intents.from_dict(loader.to_pinyin_dict(data))
        load_ms = (time.perf_counter() - started) * 1000
        # hassil compiles a template's regex filter on first use: one match per language here, so the first
        # spoken question does not pay ~100-200 ms for it.
        for sample in ("what time is it", "现在几点", "xiànzàijǐdiǎn"):
            self.recognize(sample)
        log.info("intents: %s, %d sentence files, loaded in %.0f ms, warmed in %.0f ms",
                 "+".join(self._intents), len(sources), load_ms, (time.perf_counter() - started) * 1000 - load_ms)

    def _check_answerable(self, sources: list[loader.Source]) -> None:
        """A custom intent needs a handler or a response in its language, or it could never answer."""
        for source in sources:
            if source.language not in self.languages:
                continue
            for name in source.data.get("intents", {}):
                if name not in HANDLERS and not self.responses.has(source.language, str(name)):
                    raise loader.IntentFileError(
                        f"{source.path}:{loader._line(name)}: intent {name} has no handler and no response "
                        f"template in {source.language} (add responses: intents: {name}: default: ...)")

    def recognize(self, text: str) -> IntentMatch | None:
        from hassil import recognize_best

        norm = normalize(text)
        intents = self._intents.get(norm.style if norm.style == "pinyin" else norm.language)
        if intents is None or not norm.text:
            return None
        result = recognize_best(norm.text, intents, language="zh-CN" if norm.language == "zh" else "en")
        if result is None:
            return None
        slots = {name: entity.value for name, entity in result.entities.items()}
        return IntentMatch(result.intent.name, norm.language, norm.style, slots, result.response or "default",
                           norm.text)

    def answer(self, text: str, ctx: Context) -> IntentReply | None:
        """The reply to `text` if an intent matches it, else None (the language model answers)."""
        started = time.perf_counter()
        try:
            match = self.recognize(text)
        except Exception:  # noqa: BLE001 - a recogniser hiccup on one utterance: let the model answer
            log.exception("intent recognition failed on %r", text)
            return None
        if match is None:
            log.debug("no intent in %r (%.1f ms)", text, (time.perf_counter() - started) * 1000)
            return None
        ctx = Context(ctx.now, ctx.book, match.language, ctx.timers_live)
        try:
            handler = HANDLERS.get(match.intent)
            outcome = handler(ctx, match.slots) if handler else Outcome(match.response, match.slots)
            key = outcome.key if outcome.key != "default" else match.response
            reply = self.render(match.language, match.intent, key, outcome.slots)
        except Exception:  # noqa: BLE001
            log.exception("intent %s failed on %r; the language model answers instead", match.intent, text)
            return None
        log.info("intent %s (%s, %s) in %.1f ms: %r -> %r", match.intent, match.language, match.style,
                 (time.perf_counter() - started) * 1000, text, reply)
        return IntentReply(match.intent, match.language, reply, outcome.started, outcome.cancelled, outcome.changed)

    def render(self, language: str, intent: str, key: str, slots: dict[str, Any]) -> str:
        text = self.responses.render(language, intent, key, slots)
        return _CJK_SPACE.sub(r"\1", text) if language == "zh" else text

    def announcement(self, timer: Timer, *, missed: bool) -> str:
        """What is said when a timer or alarm ends (or ended while the assistant was off)."""
        language = timer.language if timer.language in self.languages else self.languages[0]
        key = f"{timer.kind}_missed" if missed else timer.kind
        import datetime as dt

        return self.render(language, FINISHED, key, {"label": timer.label,
                                                     "due": dt.datetime.fromtimestamp(timer.due)})
