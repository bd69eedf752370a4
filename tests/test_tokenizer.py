"""Tokenizer, chat template and streaming detokenization against the real MiniMind2 tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assistant.errors import ModelError
from assistant.llm.tokenizer import DEFAULT_SYSTEM_PROMPT, Tokenizer, Turn, render_chat


@pytest.fixture(scope="module")
def tok(assets) -> Tokenizer:
    return Tokenizer(assets / "minimind-tokenizer" / "minimind2" / "tokenizer.json")


@pytest.fixture(scope="module")
def pack(reference):
    root = reference / "minimind2"
    questions = json.loads((root / "manifest.json").read_text())["minimind2-dense-tiny"]["questions"]
    return questions, np.load(root / "minimind2-dense-tiny-reference.npz")


def test_specials(tok):
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 6400)


def test_chat_ids_reproduce_conformance_pack(tok, pack):
    questions, ref = pack
    assert len(questions) == 3
    for i, question in enumerate(questions):
        assert tok.chat_ids(question) == ref[f"chat{i}_ids"].tolist()


def test_chat_ids_match_rendered_template(tok):
    """Assembling by id equals encoding the rendered text (with specials recognised) for ordinary text."""
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(tok.path))
    history = [Turn("你好", "你好！我是MiniMind。"), Turn("1+1=?", " 2")]
    for system in (DEFAULT_SYSTEM_PROMPT, "你是一个语音助手，回答要简短。"):
        text = render_chat("今天天气怎么样？", system_prompt=system, history=history)
        assert text.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n")
        assert text.endswith("<|im_start|>user\n今天天气怎么样？<|im_end|>\n<|im_start|>assistant\n")
        expected = plain.encode(text, add_special_tokens=False).ids
        assert tok.chat_ids("今天天气怎么样？", system_prompt=system, history=history) == expected


def test_special_token_text_in_user_input_stays_text(tok):
    ids = tok.chat_ids("hi <|im_end|> there")
    # Exactly: system open/close, user open/close, assistant open. No extra <|im_end|> from the user's text.
    assert ids.count(tok.eos_id) == 2
    assert ids.count(tok.bos_id) == 3
    assert "<|im_end|>" in tok.decode(ids)


def test_decode_matches_library(tok):
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(tok.path))
    text = "Hello, world! 中国最高的山是珠穆朗玛峰，海拔8848米。😀 naïve café"
    ids = tok.encode(text)
    assert tok.decode(ids) == plain.decode(ids) == text
    # Every single token's bytes agree with the library's own decoding.
    for token_id in range(3, tok.vocab_size):
        assert tok.decode([token_id]) == plain.decode([token_id])


def test_stream_decoder_never_emits_half_a_character(tok):
    text = "中国最高的山是珠穆朗玛峰，海拔八千八百四十八米。龘😀"
    ids = tok.encode(text)
    # The point of the test: some tokens must carry only part of a character.
    partial = [i for i in ids if tok.token_bytes[i].decode("utf-8", errors="replace").count("\ufffd")]
    assert len(partial) >= 4
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # held back while a character was incomplete


def test_stream_decoder_invalid_bytes_become_replacement(tok):
    ids = tok.encode("珠")
    assert len(ids) == 2  # 珠 is split over two byte-level tokens
    decoder = tok.stream_decoder()
    # A dangling lead byte at the end, and a continuation byte with no lead in the middle.
    assert decoder.push(ids[0]) == ""
    assert decoder.push(tok.encode("a")[0]) == "\ufffda"
    assert decoder.push(ids[1]) == "\ufffd"
    assert decoder.push(ids[0]) == ""
    assert decoder.flush() == "\ufffd"


def test_special_tokens_decode_to_nothing(tok):
    decoder = tok.stream_decoder()
    assert decoder.push(tok.eos_id) == ""
    assert tok.decode([tok.bos_id, *tok.encode("ok"), tok.eos_id]) == "ok"


def test_missing_or_bad_tokenizer_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match=str(bad)):
        Tokenizer(bad)
