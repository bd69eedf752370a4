"""A multi-turn conversation with MiniMind: prompt assembly within a token budget, streamed text, history.

This is what the voice daemon calls from its worker thread (and `assistant ask` from the command line).

Budget: the prompt gets `max_context_tokens` minus the room reserved for the reply (`max_new_tokens`, at
most half the context). The system prompt and the current question are always in it; earlier turns are added
newest first while they fit, so the oldest go first. A question that does not fit even alone is cut to its
last tokens (the end of a long utterance is usually where the question is) and the cut is logged.

A cancelled (or abandoned, or failed) reply is not added to the history: the next prompt then never contains a
half answer that the model would take as its own finished statement.

Thinking (minimind-3): the prompt follows the tokenizer's generation (assistant/llm/tokenizer.py), with
`open_thinking` off unless asked. Whatever the model writes between `<think>` and `</think>` is never yielded
as reply text nor kept in the history; it is in `last_thinking` after the reply (assistant/llm/think.py).

Follow-ups: the KV cache of the last reply (its prompt and the reply tokens fed back) is kept, with the ids it
holds. The next prompt usually starts with exactly those ids (system prompt, history, the last question, the
reply), so only what differs is prefilled: the cache is cut back to the longest common prefix of the ids it
holds and the new prompt, then the rest is fed. That one rule also covers the cases that must rebuild: history
trimmed to fit the context (the common prefix is then the system prompt), a cancelled reply (its tokens are in
the cache but not in the history), `clear()`, a changed system prompt. A cut prefix of a causal KV cache is
exactly what a cold run over that prefix computes, so the reply is the same (tests/test_followup.py checks the
greedy tokens against a cold run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from assistant.errors import ConfigError, ModelError
from assistant.llm.runtime import KVSequence, MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.think import ThinkFilter
from assistant.llm.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer, Turn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplyStats:
    """Figures of the last reply."""

    prompt_tokens: int
    tokens: int  # generated tokens, eos not counted
    ttft_ms: float | None  # stream() call -> first generated token; None for an empty reply
    tokens_per_s: float | None  # decode rate after the first token; None with fewer than 2 tokens
    turns_kept: int  # earlier turns that fitted in the prompt
    turns_dropped: int
    cancelled: bool
    cached_tokens: int = 0  # prompt tokens whose keys/values came from the previous reply's cache


@dataclass(frozen=True)
class _HistoryTurn:
    turn: Turn
    ids: tuple[int, ...]  # user and assistant messages, template included


class Conversation:
    """Chat history plus the model; one reply at a time."""

    def __init__(
        self,
        model: MiniMindOnnx,
        tokenizer: Tokenizer,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        max_context_tokens: int | None = None,
        open_thinking: bool = False,
    ) -> None:
        check_generation(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.open_thinking = open_thinking and tokenizer.generation == "minimind3"
        self.system_prompt = system_prompt
        limit = model.max_context_tokens
        self.max_context_tokens = min(limit, max_context_tokens) if max_context_tokens else limit
        self._system_ids = tokenizer.message_ids("system", tokenizer.encode(system_prompt))
        self._history: list[_HistoryTurn] = []
        self._lock = threading.Lock()
        # The KV cache of the last reply and the token ids it holds (None: nothing to reuse). Only stream()
        # touches them, and one reply runs at a time.
        self._cache: KVSequence | None = None
        self._cache_ids: list[int] = []
        self._pending: list[int] = []  # the last finished reply, closed, not yet in the cache (see warm_up)
        self.keep_cache = True  # False: every reply prefills its whole prompt (benchmarks' cold baseline)
        self.first_token_ms: float | None = None  # set as soon as the current reply's first token exists
        self.last_stats: ReplyStats | None = None
        self.last_thinking = ""  # the last reply's <think> block (never part of its text)

    @property
    def history(self) -> list[Turn]:
        with self._lock:
            return [h.turn for h in self._history]

    def fork(self, history: Sequence[Turn] = (), *, system_prompt: str | None = None) -> Conversation:
        """A conversation of its own (a network client's) over the same loaded model and tokenizer.

        Each generation has its own KV sequence and IO binding (llm/runtime.py), so forks may generate while
        the voice loop does.
        """
        twin = Conversation(
            self.model,
            self.tokenizer,
            system_prompt=self.system_prompt if system_prompt is None else system_prompt,
            max_context_tokens=self.max_context_tokens,
            open_thinking=self.open_thinking,
        )
        for turn in history:
            twin._remember(turn)
        return twin

    def clear(self) -> None:
        with self._lock:
            self._history.clear()

    def forget_last(self, user_text: str) -> bool:
        """Drop the newest turn if it answered `user_text` (a reply cut off while it was being spoken)."""
        with self._lock:
            if self._history and self._history[-1].turn.user == user_text:
                self._history.pop()
                self._pending = []
                return True
        return False

    def prompt_ids(self, user_text: str, sampling: Sampling) -> tuple[list[int], int, int]:
        """(prompt token ids, turns kept, turns dropped) for `user_text` after the current history."""
        tok = self.tokenizer
        reserve = min(sampling.max_new_tokens, self.max_context_tokens // 2)
        budget = self.max_context_tokens - reserve
        tail = tok.generation_prompt(open_thinking=self.open_thinking)
        framing = len(self._system_ids) + len(tok.message_ids("user", [])) + len(tail)
        room = budget - framing  # tokens left for the question's own text
        if room < 1:
            raise ConfigError(
                f"system prompt of {len(self._system_ids)} tokens leaves no room for a question in a context "
                f"of {self.max_context_tokens} tokens with {reserve} reserved for the reply: shorten the "
                "system prompt or raise max_context_tokens"
            )
        question = tok.encode(user_text)
        if len(question) > room:
            log.warning("question of %d tokens cut to its last %d to fit the context", len(question), room)
            question = question[-room:]
        fixed = self._system_ids + tok.message_ids("user", question) + tail
        with self._lock:
            history = list(self._history)
        kept: list[_HistoryTurn] = []
        used = len(fixed)
        for item in reversed(history):
            if used + len(item.ids) > budget:
                break
            kept.append(item)
            used += len(item.ids)
        kept.reverse()
        ids = list(self._system_ids)
        for item in kept:
            ids += item.ids
        ids += fixed[len(self._system_ids) :]
        return ids, len(kept), len(history) - len(kept)

    def stream(
        self, user_text: str, sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str]:
        """Yield the reply's text as it decodes (never half a character); finished replies join history."""
        started = time.perf_counter()
        self.first_token_ms = None
        prompt, kept, dropped = self.prompt_ids(user_text, sampling)
        if dropped:
            log.info("dropped the %d oldest turns to fit the context (%d kept)", dropped, kept)
        sequence = self._reusable(prompt)
        cached = sequence.length if sequence is not None else 0
        if sequence is None:
            reserve = min(sampling.max_new_tokens, self.max_context_tokens - len(prompt))
            sequence = self.model.new_sequence(capacity=len(prompt) + reserve)
        self._cache, self._cache_ids, self._pending = None, [], []  # until this reply leaves it in a known state
        decoder = self.tokenizer.stream_decoder()
        think = ThinkFilter(inside=self.open_thinking)
        self.last_thinking = ""
        pieces: list[str] = []
        count = 0
        first_at = started
        finished = False
        failed = True
        try:
            for token in self.model.generate(prompt, sampling, cancel, sequence=sequence):
                if count == 0:
                    first_at = time.perf_counter()
                    self.first_token_ms = (first_at - started) * 1000
                count += 1
                text = think.push(decoder.push(token))
                if text:
                    pieces.append(text)
                    yield text
            rest = think.push(decoder.flush()) + think.flush()
            if rest:
                pieces.append(rest)
                yield rest
            finished = True
            failed = False
        except GeneratorExit:
            failed = False  # the consumer left: the cache is still consistent
            raise
        finally:
            cancelled = not finished or (cancel is not None and cancel.is_set())
            reply = "".join(pieces)
            self.last_thinking = think.thinking
            if not failed and self.keep_cache:
                self._keep(sequence, prompt, None if cancelled else reply)
            elapsed = time.perf_counter() - first_at
            self.last_stats = ReplyStats(
                prompt_tokens=len(prompt),
                tokens=count,
                ttft_ms=self.first_token_ms,
                tokens_per_s=(count - 1) / elapsed if count > 1 and elapsed > 0 else None,
                turns_kept=kept,
                turns_dropped=dropped,
                cancelled=cancelled,
                cached_tokens=cached,
            )
            if not cancelled:
                self._remember(Turn(user=user_text, assistant=reply))
            log.info(
                "reply: %d tokens after a %d-token prompt (%d from the last reply's cache), first token %s ms, "
                "%s tokens/s%s",
                count,
                len(prompt),
                cached,
                f"{self.first_token_ms:.1f}" if self.first_token_ms is not None else "-",
                f"{self.last_stats.tokens_per_s:.1f}" if self.last_stats.tokens_per_s else "-",
                " (cancelled, not kept in history)" if cancelled else "",
            )

    def _keep(self, sequence: KVSequence, prompt: list[int], reply: str | None) -> None:
        """Keep the cache of the prompt; queue the finished reply's tokens for `warm_up`.

        The reply's own positions are dropped: they were fed one token at a time, and the int8 graph's
        one-row matrix products round differently from the many-row ones of a prefill (logits off by up to
        ~0.04 on the tiny export, measured), so a follow-up over them could pick a different greedy token
        than a cold run. Prefilled again as one chunk (`warm_up`, while the reply is spoken), they match a
        cold prefill to ~1e-6.
        """
        try:
            sequence.truncate(min(sequence.length, len(prompt)))
        except Exception:  # noqa: BLE001 - never worth failing a reply over: the next one prefills cold
            log.exception("could not keep the KV cache")
            return
        self._cache, self._cache_ids = sequence, prompt[: sequence.length]
        tok = self.tokenizer
        closing = tok.message_ids("assistant", [])[len(tok.message_ids("assistant", [], closed=False)) :]
        self._pending = tok.encode(reply) + closing if reply is not None else []

    def warm_up(self) -> int:
        """Prefill the last finished reply into the kept cache (call it while the reply is spoken).

        The next follow-up then prefills only its own question. Returns the tokens fed (0: nothing to do).
        Optional: without it the next prompt feeds the reply itself, with the same result.
        """
        sequence, pending = self._cache, self._pending
        self._pending = []
        if sequence is None or not pending or not self.keep_cache:
            return 0
        if sequence.length + len(pending) >= self.max_context_tokens:
            return 0
        started = time.perf_counter()
        self._cache = None  # until the feed is known to have worked
        try:
            sequence.feed(pending)
        except Exception:  # noqa: BLE001
            log.exception("could not prefill the last reply into the KV cache")
            return 0
        self._cache, self._cache_ids = sequence, self._cache_ids + pending
        log.debug("prefilled the last reply's %d tokens in %.1f ms", len(pending),
                  (time.perf_counter() - started) * 1000)
        return len(pending)

    def _reusable(self, prompt: list[int]) -> KVSequence | None:
        """The kept cache cut back to what it shares with `prompt` (at least one prompt token left to feed)."""
        sequence, held = self._cache, self._cache_ids
        if sequence is None or not self.keep_cache:
            return None
        limit = min(len(held), len(prompt) - 1)  # the last prompt token must be fed to get its logits
        common = 0
        while common < limit and held[common] == prompt[common]:
            common += 1
        if common == 0:
            return None
        try:
            sequence.truncate(common)
        except Exception:  # noqa: BLE001 - a cache we cannot cut is dropped; the reply prefills cold
            log.exception("could not reuse the KV cache; prefilling the whole prompt")
            return None
        return sequence

    def _remember(self, turn: Turn) -> None:
        tok = self.tokenizer
        ids = tok.message_ids("user", tok.encode(turn.user)) + tok.reply_ids(tok.encode(turn.assistant))
        with self._lock:
            self._history.append(_HistoryTurn(turn=turn, ids=tuple(ids)))


def check_generation(model: MiniMindOnnx, tokenizer: Tokenizer) -> None:
    """The tokenizer must be the one of the model's generation (model.json "generation"; MiniMind2 if absent)."""
    wanted = model.manifest.generation
    if tokenizer.generation != wanted:
        names = {"minimind2": "MiniMind2", "minimind3": "minimind-3"}
        raise ModelError(
            f"{tokenizer.path} is the {names.get(tokenizer.generation, tokenizer.generation)} tokenizer but "
            f"{model.manifest.path} describes a {names.get(wanted, wanted)} model (vocabulary {tokenizer.vocab_size}, "
            "special tokens <think>/</think> differ): re-export the model with its own tokenizer"
        )
