"""MiniMind tokenizers: `tokenizer.json` through the `tokenizers` library, the ChatML chat template, and
UTF-8-safe streaming detokenization.

Two generations share ids 0-2 and the vocabulary size (6400) but not the rest: the minimind-3 tokenizer has
added tokens up to 35, among them `<think>` (25) and `</think>` (26), and its chat template (tokenizer_config.json
`chat_template`) opens every assistant turn with a thinking block. With `open_thinking` off (the default, as in
the official template) the generation prompt is `<|im_start|>assistant\n<think>\n\n</think>\n\n`; on, it ends
with `<think>\n` and the model writes its reasoning first. Past assistant turns are rendered with an empty
block, `<think>\n\n</think>\n\n{reply}`, as the official template does for a reply without reasoning. The
template is rendered here by hand (no jinja): only its no-tools branch is used, and it is a few fixed strings.

The template is assembled from token ids rather than by encoding one rendered string: the special tokens are
placed by id and the text between them is encoded with special-token recognition switched off, so a user
who says (or types) "<|im_end|>" cannot close a turn. Encoding the rendered string in one go gives the same
ids for ordinary text, because the tokenizer splits at special tokens before it does anything else; the tests
check this against the conformance pack's chat prompts.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers

from assistant.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"  # minimind-3, open_thinking off
GENERATIONS = {"minimind2": "ChatML (MiniMind2)", "minimind3": "ChatML with thinking switch (minimind-3)"}


def tokenizer_generation(vocab: dict[str, int]) -> str:
    """"minimind3" when the vocabulary has <think> and </think> (the minimind-3 tokenizer), else "minimind2"."""
    return "minimind3" if THINK_OPEN in vocab and THINK_CLOSE in vocab else "minimind2"


@dataclass(frozen=True)
class Turn:
    """One finished exchange of a conversation."""

    user: str
    assistant: str


def render_chat(
    question: str,
    *,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    history: Sequence[Turn] = (),
    generation: str = "minimind2",
    open_thinking: bool = False,
) -> str:
    """The chat prompt as text, ending where the assistant's reply begins (for logs and tests)."""
    think = generation == "minimind3"
    parts = [f"{IM_START}system\n{system_prompt}{IM_END}\n"]
    for turn in history:
        parts.append(f"{IM_START}user\n{turn.user}{IM_END}\n")
        parts.append(f"{IM_START}assistant\n{EMPTY_THINK if think else ''}{turn.assistant}{IM_END}\n")
    parts.append(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n")
    if think:
        parts.append(f"{THINK_OPEN}\n" if open_thinking else EMPTY_THINK)
    return "".join(parts)


def _byte_level_alphabet() -> dict[str, int]:
    """Inverse of the byte-level BPE byte -> printable character map (GPT-2 convention).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to code points 256 and up, in
    byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    char_to_byte = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in char_to_byte.values():
            char_to_byte[chr(256 + shifted)] = b
            shifted += 1
    return char_to_byte


class StreamDecoder:
    """Turns token ids into text one token at a time, never emitting part of a UTF-8 character.

    Byte-level BPE splits a Chinese character's three bytes over two or three tokens; the bytes are held back
    until the character is complete. Invalid byte sequences (a model can produce them) become U+FFFD rather
    than an exception.
    """

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token ("" while a character is still incomplete)."""
        return self._utf8.decode(self._token_bytes[token_id])

    def flush(self) -> str:
        """Whatever is left at the end of a reply (a dangling partial character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class Tokenizer:
    """A MiniMind tokenizer loaded from `tokenizer.json` (byte-level BPE, ChatML specials)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"tokenizer file missing: {path} (assistant-export writes it beside model.onnx)")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - the library raises bare Exceptions for bad files
            raise ModelError(f"cannot read tokenizer {path}: {exc}") from exc
        # Special-token strings inside text are text, never control tokens (see module docstring).
        self._tok.encode_special_tokens = True
        self.path = path
        self.vocab_size: int = self._tok.get_vocab_size()
        self.bos_id = self._special_id(IM_START)
        self.eos_id = self._special_id(IM_END)
        self.special_ids = frozenset(t["id"] for t in spec.get("added_tokens", []) if t.get("special"))
        self.generation = tokenizer_generation(self._tok.get_vocab(with_added_tokens=True))
        decoder = (spec.get("decoder") or {}).get("type")
        if decoder != "ByteLevel":
            raise ModelError(f"{path}: decoder {decoder!r} is not supported (MiniMind2 uses ByteLevel)")
        self.token_bytes = self._build_token_bytes()
        # "\n" after <|im_end|> and the role headers never change: encode them once.
        self._newline = self.encode("\n")
        self._headers = {role: self.encode(f"{role}\n") for role in ("system", "user", "assistant")}
        # minimind-3's thinking block, by id (<think> and </think> are added tokens, not text).
        if self.generation == "minimind3":
            think_open, think_close = self._special_id(THINK_OPEN), self._special_id(THINK_CLOSE)
            self._empty_think = [think_open, *self.encode("\n\n"), think_close, *self.encode("\n\n")]
            self._open_think = [think_open, *self._newline]
        else:
            self._empty_think = self._open_think = []

    @classmethod
    def from_dir(cls, model_dir: Path) -> Tokenizer:
        return cls(Path(model_dir) / "tokenizer.json")

    def _special_id(self, content: str) -> int:
        token_id = self._tok.token_to_id(content)
        if token_id is None:
            raise ModelError(f"{self.path}: special token {content} missing (not a MiniMind tokenizer?)")
        return token_id

    def _build_token_bytes(self) -> list[bytes]:
        """Byte string of every token id; special tokens decode to nothing (they are never shown)."""
        alphabet = _byte_level_alphabet()
        table = [b""] * self.vocab_size
        for token, token_id in self._tok.get_vocab(with_added_tokens=True).items():
            if token_id in self.special_ids:
                continue
            try:
                table[token_id] = bytes(alphabet[ch] for ch in token)
            except KeyError as exc:
                raise ModelError(f"{self.path}: token {token!r} is not byte-level BPE") from exc
        return table

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text; no specials are added and none are recognised."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens left out."""
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.token_bytes)

    def message_ids(self, role: str, content_ids: Sequence[int], *, closed: bool = True) -> list[int]:
        """`<|im_start|>role\\n{content}<|im_end|>\\n`, or just the open header when `closed` is False."""
        ids = [self.bos_id, *self._headers[role], *content_ids]
        if closed:
            ids += [self.eos_id, *self._newline]
        return ids

    def reply_ids(self, reply_ids: Sequence[int]) -> list[int]:
        """A finished assistant message of the history (minimind-3: behind an empty thinking block)."""
        return self.message_ids("assistant", [*self._empty_think, *reply_ids])

    def generation_prompt(self, *, open_thinking: bool = False) -> list[int]:
        """The open assistant header the reply is generated after (minimind-3: with its thinking block)."""
        return self.message_ids(
            "assistant", self._open_think if open_thinking else self._empty_think, closed=False
        )

    def chat_ids(
        self,
        question: str,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        history: Sequence[Turn] = (),
        open_thinking: bool = False,
    ) -> list[int]:
        """Token ids of `render_chat(question, ..., generation=self.generation, open_thinking=...)`."""
        ids = self.message_ids("system", self.encode(system_prompt))
        for turn in history:
            ids += self.message_ids("user", self.encode(turn.user))
            ids += self.reply_ids(self.encode(turn.assistant))
        ids += self.message_ids("user", self.encode(question))
        ids += self.generation_prompt(open_thinking=open_thinking)
        return ids
