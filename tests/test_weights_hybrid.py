"""llm.weights: hybrid: both int8 forms loaded, prompts through the dynamic form, decode steps through the blocks,
over one KV cache (assistant/llm/runtime.py SharedKVSequence, assistant/llm/weights.py).

Real onnxruntime sessions on the trained demo model (assistant/data/minimind-demo, both forms, fused graph). Which
session ran a step is read from its logits: with one thread a session's logits are reproducible bit for bit, and
the two forms' logits differ, so a hybrid step equal to one single-form model's step ran through that form.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from assistant.errors import ConfigError, ModelError
from assistant.llm import runtime
from assistant.llm.chat import Conversation
from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.tokenizer import Tokenizer
from assistant.settings import load_settings

DEMO = Path(runtime.__file__).parent.parent / "data" / "minimind-demo"
GREEDY = Sampling(greedy=True, max_new_tokens=24)
QUESTIONS = ["你好，请介绍一下你自己。", "What is the capital of France?", "中国最高的山是哪座？", "再说一遍好吗？"]


@pytest.fixture(scope="module")
def forms() -> dict[str, MiniMindOnnx]:
    return {w: MiniMindOnnx(DEMO, threads=1, weights=w) for w in ("blocks", "dynamic", "hybrid")}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_dir(DEMO)


def demo_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "demo"
    shutil.copytree(DEMO, directory)
    return directory


def fail_form(directory: Path, name: str) -> None:
    """What export writes when a form fails parity (export/forms.py): "passed": false, no file, and the other
    form in model.onnx."""
    manifest = json.loads((directory / "model.json").read_text())
    file = manifest["forms"][name]["file"]
    manifest["forms"][name].update(passed=False, file=None)
    del manifest["files"][file]
    (directory / file).unlink()
    (other,) = (entry for entry in manifest["forms"].values() if entry["passed"])
    if other["file"] != "model.onnx":
        (directory / other["file"]).rename(directory / "model.onnx")
        manifest["files"]["model.onnx"] = manifest["files"].pop(other["file"])
        other["file"] = "model.onnx"
    (directory / "model.json").write_text(json.dumps(manifest))


def test_hybrid_opens_both_forms_and_says_so(tmp_path, monkeypatch, caplog) -> None:
    opened = []

    class CountingSession(ort.InferenceSession):  # a real session; only counted
        def __init__(self, *args, **kwargs) -> None:
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", CountingSession)
    with caplog.at_level(logging.INFO, logger="assistant.llm.runtime"):
        model = MiniMindOnnx(DEMO, threads=1, weights="hybrid")
    assert len(opened) == 2  # by design: hybrid is the one setting that opens the other form's file
    assert model.weights.name == "hybrid"
    assert (model.weights.form.name, model.weights.prefill.name) == ("blocks", "dynamic")
    assert (model.model_file.name, model.prefill_file.name) == ("model.onnx", "model.int8-dynamic.onnx")
    assert model.prefill_session is not None
    assert "weights: hybrid (dynamic prefill, blocks decode)" in caplog.text
    assert "model.onnx + model.int8-dynamic.onnx" in caplog.text and " MB" in caplog.text.split("RSS")[-1]
    # One form: no second session.
    assert MiniMindOnnx(DEMO, threads=1, weights="blocks").prefill_session is None


def test_both_files_are_verified(tmp_path) -> None:
    directory = demo_copy(tmp_path)
    data = bytearray((directory / "model.int8-dynamic.onnx").read_bytes())
    data[-1] ^= 1
    (directory / "model.int8-dynamic.onnx").write_bytes(bytes(data))
    assert MiniMindOnnx(directory, threads=1, weights="blocks").prefill_session is None  # never read
    with pytest.raises(ModelError, match=r"model\.int8-dynamic\.onnx does not match"):
        MiniMindOnnx(directory, threads=1, weights="hybrid")


def test_prompts_run_dynamic_and_steps_run_blocks(forms) -> None:
    prompt = list(range(100, 140))
    logits = {}
    for name, model in forms.items():
        sequence = model.new_sequence()
        logits[name] = [sequence.feed(prompt).copy(), sequence.feed([7]).copy()]
        logits[name].append(model.new_sequence().feed([5]).copy())  # a one-token prompt is a decode-sized step
    hybrid, blocks, dynamic = logits["hybrid"], logits["blocks"], logits["dynamic"]
    assert not np.array_equal(blocks[0], dynamic[0])  # the forms differ, so equality below says which ran
    np.testing.assert_array_equal(hybrid[0], dynamic[0])
    np.testing.assert_array_equal(hybrid[2], blocks[2])
    # The decode step after a dynamic prefill: blocks weights over the dynamic form's cache, close to both.
    for other in (blocks[1], dynamic[1]):
        np.testing.assert_allclose(hybrid[1], other, atol=1.0)
    assert hybrid[1].argmax() == blocks[1].argmax() == dynamic[1].argmax()


def test_growing_cache_is_rebound_in_both_sessions(forms) -> None:
    model = forms["hybrid"]
    roomy = model.new_sequence(capacity=256)
    small = model.new_sequence(capacity=4)  # the prompt outgrows it: fresh buffers bound to both bindings
    prompt = list(range(200, 230))
    np.testing.assert_array_equal(small.feed(prompt), roomy.feed(prompt))
    assert small.capacity >= 30
    for token in (11, 12, 13):
        np.testing.assert_array_equal(small.feed([token]), roomy.feed([token]))
    more = list(range(300, 340))  # a follow-up prompt after decode steps, through the dynamic session again
    np.testing.assert_array_equal(small.feed(more), roomy.feed(more))


def test_greedy_replies_follow_the_forms(forms, tok) -> None:
    """The first token is the dynamic form's (its prefill logits, exactly); where the two forms give the same
    reply, hybrid gives it too. (Measured on 12 prompts x 48 tokens: hybrid = blocks in 9, = dynamic in 11;
    BENCHMARKS.md, int8-hybrid.)"""
    agreed = 0
    for question in QUESTIONS:
        prompt, _, _ = Conversation(forms["blocks"], tok).prompt_ids(question, GREEDY)
        replies = {name: list(model.generate(prompt, GREEDY)) for name, model in forms.items()}
        assert replies["hybrid"][:1] == replies["dynamic"][:1], question
        if replies["blocks"] == replies["dynamic"]:
            agreed += 1
            assert replies["hybrid"] == replies["blocks"], question
    assert agreed >= 2  # the check above ran (the forms agree on most prompts of the demo model)


def test_follow_up_over_the_cache(forms, tok) -> None:
    """Conversation's cache reuse works over both sessions. Warm and cold replies are compared as test_followup.py
    does for int8: not token for token, since the dynamic form's activation scales depend on how a prompt is
    split (measured: 6 of 7 follow-ups equal to a cold run, as for dynamic alone; blocks alone 7 of 7)."""
    model = forms["hybrid"]
    chat = Conversation(model, tok)
    list(chat.stream(QUESTIONS[0], GREEDY))
    same = 0
    for question in QUESTIONS[1:]:
        assert chat.warm_up() > 0
        prompt, _, _ = chat.prompt_ids(question, GREEDY)
        cold = tok.decode(list(model.generate(prompt, GREEDY)))
        warm = "".join(chat.stream(question, GREEDY))
        assert chat.last_stats.cached_tokens > 0 and warm
        same += warm == cold
    assert same >= 1


@pytest.mark.parametrize(("failed", "left"), [("dynamic", "blocks"), ("blocks", "dynamic")])
def test_one_usable_form_falls_back_to_it(tmp_path, caplog, failed: str, left: str) -> None:
    directory = demo_copy(tmp_path)
    fail_form(directory, failed)
    with caplog.at_level(logging.INFO, logger="assistant.llm.runtime"):
        model = MiniMindOnnx(directory, threads=1, weights="hybrid")
    assert model.weights.name == left and model.prefill_session is None
    assert f"weights: {left} (llm.weights is hybrid but this export has only {left} ({failed} failed" in caplog.text
    assert list(model.generate([1, 300, 400, 500], GREEDY))


def test_settings_accept_hybrid_and_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  weights: hybrid\n")
    assert load_settings(path).llm.weights == "hybrid"
    path.write_text("llm:\n  weights: both\n")
    with pytest.raises(ConfigError, match=r"llm\.weights.*hybrid"):
        load_settings(path)
