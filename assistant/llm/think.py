"""Separates a reply's `<think>…</think>` block from the text that is spoken or sent, as it streams.

minimind-3 writes its reasoning between `<think>` and `</think>` (token ids 25/26, decoded as those strings);
with `open_thinking` the prompt already ends inside the block, so the stream starts there. Reasoning is never a
reply: it is collected in `thinking` (for `ask --json --show-thinking`) and the reply is only what follows the
block. A tag may also arrive spelled out over several pieces (`<`, `think`, `>`), so a piece's tail that could
still become a tag is held back until the next piece decides it.
"""

from __future__ import annotations

from assistant.llm.tokenizer import THINK_CLOSE, THINK_OPEN


class ThinkFilter:
    """push(text) -> reply text to emit now; flush() at the end; `thinking` holds the reasoning seen."""

    def __init__(self, *, inside: bool = False) -> None:
        self._inside = inside  # True while in a thinking block
        self._held = ""  # a tail that may be the start of a tag
        self._after_block = inside  # the newlines that follow </think> are template, not reply
        self._thinking: list[str] = []

    @property
    def thinking(self) -> str:
        return "".join(self._thinking).strip("\n")

    def push(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        out: list[str] = []
        while text:
            tags = (THINK_CLOSE,) if self._inside else (THINK_OPEN, THINK_CLOSE)
            found = [(text.find(tag), tag) for tag in tags if tag in text]
            if found:
                index, tag = min(found)
                self._route(text[:index], out)
                text = text[index + len(tag) :]
                # </think> outside a block is a stray tag (a model that started thinking without <think>):
                # dropped, never spoken.
                self._inside = tag == THINK_OPEN
                self._after_block = not self._inside
                continue
            keep = _partial_tag_length(text, tags)
            self._route(text[: len(text) - keep], out)
            self._held = text[len(text) - keep :]
            break
        return "".join(out)

    def flush(self) -> str:
        """The held tail: reasoning if the block never closed, else reply text."""
        out: list[str] = []
        self._route(self._held, out)
        self._held = ""
        return "".join(out)

    def _route(self, text: str, out: list[str]) -> None:
        if not text:
            return
        if self._inside:
            self._thinking.append(text)
            return
        if self._after_block:
            text = text.lstrip("\n")
            if not text:
                return
            self._after_block = False
        out.append(text)


def _partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tags`."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best
