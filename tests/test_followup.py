"""Quick follow-ups: the previous reply's KV cache is reused, and the reply is the one a cold prompt gives.

Greedy tokens of a warm follow-up (only the new tokens prefilled) are compared with a cold run of the same
prompt ids through `MiniMindOnnx.generate`, on the tiny conformance export test_chat.py uses (fp32), after a
finished reply, after a cancelled one, after clear() and after the history was trimmed to fit the context.

The int8 export is run through the same turns for the cache bookkeeping, but its tokens are not compared:
MatMulNBits quantizes activations, so a prefill split at another position (the warm prompt starts where the
cache ends) changes the logits by ~1e-6, and now and then that crosses a rounding step of the activation
quantization and flips a near-tie of the random-weight model (seen once in 12 turns here; BENCHMARKS.md).
"""

from __future__ import annotations

import threading

import pytest

from assistant.llm.chat import Conversation
from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer

GREEDY = Sampling(greedy=True, max_new_tokens=12)
QUESTIONS = ["你好，请介绍一下你自己。", "What is the capital of France?", "中国最高的山是哪座？", "再说一遍好吗？"]


@pytest.fixture(scope="module")
def tok(tiny_dirs) -> Tokenizer:  # noqa: F811
    return Tokenizer.from_dir(tiny_dirs["fp32"])


@pytest.fixture(params=["fp32", "int8"])
def model(request, tiny_fp32, tiny_int8) -> MiniMindOnnx:  # noqa: F811
    return {"fp32": tiny_fp32, "int8": tiny_int8}[request.param]


def exact(model: MiniMindOnnx) -> bool:
    return model.manifest.quantization == "fp32"


def warm_and_cold(chat: Conversation, model: MiniMindOnnx, question: str, sampling: Sampling = GREEDY) -> int:
    """Answer `question` warm; on fp32 assert the text is a cold run's. Returns the prompt tokens cached."""
    prompt, _, _ = chat.prompt_ids(question, sampling)
    cold = list(model.generate(prompt, sampling))
    text = "".join(chat.stream(question, sampling))
    if exact(model):
        assert text == chat.tokenizer.decode(cold), "warm reply differs from the cold one"
    return chat.last_stats.cached_tokens


def test_follow_up_prefills_only_new_tokens_and_matches_cold(model, tok):
    chat = Conversation(model, tok)
    list(chat.stream(QUESTIONS[0], GREEDY))
    assert chat.last_stats.cached_tokens == 0
    for question in QUESTIONS[1:]:
        assert chat.warm_up() > 0  # the daemon calls it while the reply is spoken
        prompt, kept, dropped = chat.prompt_ids(question, GREEDY)
        assert dropped == 0
        cached = warm_and_cold(chat, model, question)
        # Everything before the new question came from the cache, the previous reply included.
        question_ids = tok.message_ids("user", tok.encode(question))
        tail = tok.message_ids("assistant", [], closed=False)
        assert len(prompt) - cached == len(question_ids) + len(tail)


def test_follow_up_without_warm_up_feeds_the_reply_too(model, tok):
    chat = Conversation(model, tok)
    first_prompt = chat.prompt_ids(QUESTIONS[0], GREEDY)[0]
    list(chat.stream(QUESTIONS[0], GREEDY))
    warm_and_cold(chat, model, QUESTIONS[1])
    assert chat.last_stats.cached_tokens == len(first_prompt)


def test_cancelled_reply_cache_is_cut_back(model, tok):
    chat = Conversation(model, tok)
    list(chat.stream(QUESTIONS[0], GREEDY))
    cancel = threading.Event()
    for i, _ in enumerate(chat.stream(QUESTIONS[1], Sampling(greedy=True, max_new_tokens=40), cancel)):
        if i == 3:
            cancel.set()
    assert chat.last_stats.cancelled and len(chat.history) == 1
    # The cancelled reply is in the cache but not in the history: the cache is cut back to before it.
    warm_and_cold(chat, model, QUESTIONS[2])
    assert 0 < chat.last_stats.cached_tokens


def test_trimmed_history_rebuilds_the_cache(model, tok):
    chat = Conversation(model, tok, max_context_tokens=120)
    short = Sampling(greedy=True, max_new_tokens=8)
    dropped_seen = False
    for i in range(6):
        question = f"第{i}个问题：{QUESTIONS[i % 4]}"
        prompt, kept, dropped = chat.prompt_ids(question, short)
        warm_and_cold(chat, model, question, short)
        if dropped and chat.last_stats.turns_dropped:
            dropped_seen = True
            # The oldest turn left the prompt: only the system prompt and the opening the next turn shares
            # with the dropped one ("<|im_start|>user\n第...个问题") could be reused.
            system = len(tok.message_ids("system", tok.encode(chat.system_prompt)))
            assert chat.last_stats.cached_tokens <= system + 8
    assert dropped_seen


def test_clear_and_cold_setting(model, tok):
    chat = Conversation(model, tok)
    list(chat.stream(QUESTIONS[0], GREEDY))
    chat.clear()
    warm_and_cold(chat, model, QUESTIONS[1])
    system = len(tok.message_ids("system", tok.encode(chat.system_prompt)))
    assert chat.last_stats.cached_tokens <= system + len(tok.message_ids("user", [], closed=False))
    chat.keep_cache = False
    warm_and_cold(chat, model, QUESTIONS[2])
    assert chat.last_stats.cached_tokens == 0


def test_sequence_truncate_keeps_prefix_logits(model):
    """A cut cache followed by a feed gives the logits a fresh sequence gives (both graph kinds)."""
    import numpy as np

    ids = list(range(10, 40))
    fresh = model.new_sequence()
    want = fresh.feed(ids[:20] + [7, 8, 9]).copy()
    seq = model.new_sequence()
    seq.feed(ids)
    seq.truncate(20)
    got = seq.feed([7, 8, 9])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert seq.length == 23
