"""Conversation: streamed text, multi-turn history within a token budget, cancel, clear."""

from __future__ import annotations

import logging
import threading

import pytest

from assistant.errors import ConfigError
from assistant.llm.chat import Conversation
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer, Turn

GREEDY = Sampling(greedy=True, max_new_tokens=24)
QUESTIONS = ["你好，请介绍一下你自己。", "What is the capital of France?", "中国最高的山是哪座？"]


@pytest.fixture(scope="module")
def tok(tiny_dirs) -> Tokenizer:
    return Tokenizer.from_dir(tiny_dirs["fp32"])


def test_stream_text_is_the_greedy_reply(tiny_fp32, tok, pack):
    chat = Conversation(tiny_fp32, tok)
    pieces = list(chat.stream(QUESTIONS[2], GREEDY))
    assert "".join(pieces) == tok.decode(pack["chat2_greedy"].tolist())
    assert all(pieces)
    stats = chat.last_stats
    assert stats.tokens == 24
    assert stats.prompt_tokens == len(pack["chat2_ids"])
    assert stats.ttft_ms is not None
    assert not stats.cancelled
    assert chat.history == [Turn(QUESTIONS[2], "".join(pieces))]


def test_second_turn_prompt_contains_the_first(tiny_fp32, tok):
    chat = Conversation(tiny_fp32, tok, system_prompt="你是语音助手。")
    reply = "".join(chat.stream(QUESTIONS[0], Sampling(greedy=True, max_new_tokens=6)))
    ids, kept, dropped = chat.prompt_ids(QUESTIONS[1], GREEDY)
    assert (kept, dropped) == (1, 0)
    expected = tok.chat_ids(QUESTIONS[1], system_prompt="你是语音助手。", history=[Turn(QUESTIONS[0], reply)])
    assert ids == expected
    chat.clear()
    assert chat.history == []
    assert chat.prompt_ids(QUESTIONS[1], GREEDY)[0] == tok.chat_ids(
        QUESTIONS[1], system_prompt="你是语音助手。"
    )


def test_oldest_turns_dropped_first(tiny_fp32, tok):
    chat = Conversation(tiny_fp32, tok, max_context_tokens=160)
    short = Sampling(greedy=True, max_new_tokens=4)
    for i in range(6):
        list(chat.stream(f"第{i}个问题：{QUESTIONS[i % 3]}", short))
    history = chat.history
    assert len(history) == 6
    ids, kept, dropped = chat.prompt_ids("最后一个问题", short)
    assert 0 < kept < 6
    assert kept + dropped == 6
    assert len(ids) <= 160 - 4
    # Exactly the newest `kept` turns, in order, and the system prompt first.
    assert ids == tok.chat_ids("最后一个问题", history=history[-kept:])
    # The next turn would not have fitted.
    assert len(tok.chat_ids("最后一个问题", history=history[-kept - 1 :])) > 160 - 4


def test_reply_reserve_counts_against_history(tiny_fp32, tok):
    chat = Conversation(tiny_fp32, tok, max_context_tokens=200)
    for i in range(4):
        list(chat.stream(QUESTIONS[i % 3], Sampling(greedy=True, max_new_tokens=8)))
    _, kept_small_reply, _ = chat.prompt_ids("再说一遍", Sampling(max_new_tokens=8))
    _, kept_long_reply, _ = chat.prompt_ids("再说一遍", Sampling(max_new_tokens=90))
    assert kept_long_reply < kept_small_reply


def test_long_question_is_cut_and_system_prompt_kept(tiny_fp32, tok, caplog):
    chat = Conversation(tiny_fp32, tok, max_context_tokens=96)
    list(chat.stream(QUESTIONS[1], Sampling(greedy=True, max_new_tokens=4)))
    question = "我想问一个很长的问题，" * 40 + "最后：山有多高？"
    with caplog.at_level(logging.WARNING, logger="assistant.llm.chat"):
        ids, kept, dropped = chat.prompt_ids(question, Sampling(max_new_tokens=16))
    assert "cut" in caplog.text
    assert (kept, dropped) == (0, 1)
    assert len(ids) == 96 - 16
    system = tok.message_ids("system", tok.encode("You are a helpful assistant"))
    assert ids[: len(system)] == system
    assert tok.decode(ids).endswith("最后：山有多高？\nassistant\n")
    # The model still answers it.
    assert len(list(chat.stream(question, Sampling(greedy=True, max_new_tokens=16)))) > 0


def test_system_prompt_too_long_is_config_error(tiny_fp32, tok):
    chat = Conversation(tiny_fp32, tok, system_prompt="很长的系统提示。" * 50, max_context_tokens=64)
    with pytest.raises(ConfigError, match="system prompt"):
        chat.prompt_ids("你好", Sampling(max_new_tokens=8))


def test_cancelled_reply_is_not_kept(tiny_fp32, tok):
    chat = Conversation(tiny_fp32, tok)
    cancel = threading.Event()
    pieces = []
    for piece in chat.stream(QUESTIONS[0], Sampling(greedy=True, max_new_tokens=200), cancel):
        pieces.append(piece)
        if len(pieces) == 2:
            cancel.set()
    assert len(pieces) <= 3  # a held-back partial character may still be flushed
    assert chat.last_stats.cancelled
    assert chat.history == []
    # A consumer that walks away mid-reply counts as cancelled too.
    stream = chat.stream(QUESTIONS[0], GREEDY)
    next(stream)
    stream.close()
    assert chat.history == []
    list(chat.stream(QUESTIONS[0], Sampling(greedy=True, max_new_tokens=3)))
    assert len(chat.history) == 1


def test_reply_ending_at_eos_is_kept(eos_model_dir, tok, pack):
    from assistant.llm.runtime import MiniMindOnnx

    chat = Conversation(MiniMindOnnx(eos_model_dir, threads=1), tok)
    text = "".join(chat.stream(QUESTIONS[1], Sampling(greedy=True, max_new_tokens=50)))
    assert chat.last_stats.tokens == 3
    assert text == tok.decode(pack["chat1_greedy"].tolist()[:3])
    assert chat.history == [Turn(QUESTIONS[1], text)]
