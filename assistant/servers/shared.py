"""The loaded components the servers share with the voice loop (built by pipeline.py, handed in by commands/),
and the model work every protocol does the same way: transcribe a clip, answer a text, speak a text."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE
from assistant.llm.sampling import Sampling

BLOCK = SAMPLE_RATE // 2  # samples per recognizer step: the voice loop may cut in between two


@dataclass(frozen=True)
class Shared:
    chat: Any  # llm.chat.Conversation of the voice loop; servers only use chat.fork()
    sampling: Sampling  # the llm: section's sampling, the default of every request
    model_id: str  # the name /v1/models and Wyoming's info give the LLM
    asr: Any | None = None  # a recognizer with fork() (StreamingASR), or None: no speech-to-text served
    asr_name: str = "asr"
    wake: Any | None = None  # a spotter with fork() (WakeWord, GatedWakeWord), or None
    wake_phrases: dict[str, str] = field(default_factory=dict)  # label -> phrase as written
    voice: Any | None = None  # reply.tts.Synthesizer, or None: no text-to-speech served
    voice_name: str = "none"
    languages: tuple[str, ...] = ("zh", "en")  # the LLM's (MiniMind is trained on Chinese and English)
    asr_languages: tuple[str, ...] = ("en",)
    wake_languages: tuple[str, ...] = ("en",)
    voice_languages: tuple[str, ...] = ("en",)
    intents: Any | None = None  # intents.engine.IntentEngine, tried before the model (None: intents off)


def languages_of(model_name: str) -> tuple[str, ...]:
    """Languages a sherpa-onnx model speaks, from the words of its folder name (the models carry no such field)."""
    words = set(re.split(r"[^a-z0-9]+", model_name.lower()))
    if "sensevoice" in words or {"sense", "voice"} <= words:
        return ("zh", "en", "ja", "ko", "yue")
    found = []
    if words & {"zh", "cmn", "chinese", "wenetspeech", "aishell", "paraformer", "bilingual"}:
        found.append("zh")
    if words & {"en", "english", "gigaspeech", "librispeech", "bilingual"}:
        found.append("en")
    return tuple(found) or ("en",)


def transcribe(recognizer: Any, samples: np.ndarray, hold: Callable[[], None]) -> str:
    """Text of a whole clip with a forked streaming recognizer; endpoints inside the clip join the pieces."""
    pieces: list[str] = []
    recognizer.start()
    for start in range(0, len(samples), BLOCK):
        update = recognizer.accept(samples[start : start + BLOCK])
        if update.endpoint:
            text = recognizer.finish()
            if text:
                pieces.append(text)
            recognizer.start()
        hold()
    text = recognizer.finish()
    if text:
        pieces.append(text)
    return " ".join(pieces)


Intent = Callable[[str, str | None], str | None]
"""The seam for assistant/intents: (text, conversation id) -> a reply, or None to let MiniMind answer."""


class Answerer:
    """Text in, reply text out: the intents first, then MiniMind with one history per conversation."""

    def __init__(self, shared: Shared, intents: Sequence[Intent] = (), max_conversations: int = 64) -> None:
        self.shared = shared
        self.intents = list(intents)
        self.max_conversations = max_conversations
        self._conversations: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def conversation(self, conversation_id: str | None) -> Any:
        """The conversation of this id (kept, least recently used dropped first); None: a fresh one."""
        if not conversation_id:
            return self.shared.chat.fork()
        with self._lock:
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                conversation = self._conversations[conversation_id] = self.shared.chat.fork()
                while len(self._conversations) > self.max_conversations:
                    self._conversations.popitem(last=False)
            self._conversations.move_to_end(conversation_id)
            return conversation

    def answer(self, text: str, conversation_id: str | None, cancel: threading.Event) -> Iterator[str]:
        if self.shared.intents is not None:
            reply = _intent_reply(self.shared.intents, text)
            if reply is not None:
                yield reply
                return
        for intent in self.intents:
            reply = intent(text, conversation_id)
            if reply is not None:
                yield reply
                return
        yield from self.conversation(conversation_id).stream(text, self.shared.sampling, cancel)


def _intent_reply(engine: Any, text: str) -> str | None:
    """The intent layer's answer for a network client, or None. Timers are the voice loop's: a client's request
    to set one is answered from an in-memory book that nobody announces (timers_live False says so)."""
    from assistant.intents.handlers import Context
    from assistant.intents.timers import TimerBook

    answer = engine.answer(text, Context(time.time(), TimerBook(), "en", timers_live=False))
    return None if answer is None else answer.text
