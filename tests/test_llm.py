"""The onnxruntime MiniMind generator against the conformance pack, through real exports made here.

The exports are built once per session in a temporary folder from the pack's dense-tiny `.pth` (tests may
use torch; assistant/ never does): the fixtures `tiny_dirs`, `tiny_fp32`, `tiny_int8`, `pack` in conftest.py.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from assistant.errors import ConfigError, ModelError
from assistant.llm.runtime import MiniMindOnnx, load_manifest
from assistant.llm.sampling import Sampler, Sampling
from tests.support.models import TINY, teacher_forced_logits

GREEDY = Sampling(greedy=True, max_new_tokens=24)


@pytest.mark.parametrize("i", range(3))
def test_fp32_greedy_equals_pack(tiny_fp32, pack, i):
    prompt = pack[f"chat{i}_ids"].tolist()
    assert list(tiny_fp32.generate(prompt, GREEDY)) == pack[f"chat{i}_greedy"].tolist()


@pytest.mark.parametrize("i", range(3))
def test_fp32_decode_logits_match_pack(tiny_fp32, pack, i):
    logits = teacher_forced_logits(tiny_fp32, pack[f"chat{i}_ids"].tolist(), pack[f"chat{i}_greedy"].tolist())
    np.testing.assert_allclose(logits, pack[f"chat{i}_decode_logits"], atol=1e-4, rtol=0)


def test_int8_top1_agreement(tiny_int8, pack, record_property):
    """int8 may differ from fp32; where fp32 is sure (top-1/top-2 gap > 0.5) it must agree (target 98%)."""
    agree_confident = confident = agree_all = total = 0
    greedy_equal = 0
    for i in range(3):
        prompt = pack[f"chat{i}_ids"].tolist()
        reference = pack[f"chat{i}_decode_logits"]
        logits = teacher_forced_logits(tiny_int8, prompt, pack[f"chat{i}_greedy"].tolist())
        top2 = np.sort(reference, axis=1)[:, -2:]
        sure = top2[:, 1] - top2[:, 0] > 0.5
        same = logits.argmax(axis=1) == reference.argmax(axis=1)
        agree_confident += int(same[sure].sum())
        confident += int(sure.sum())
        agree_all += int(same.sum())
        total += same.size
        generated = list(tiny_int8.generate(prompt, GREEDY))
        greedy_equal += int(np.cumprod(np.equal(generated, pack[f"chat{i}_greedy"])).sum())
    record_property("int8_top1_all", f"{agree_all}/{total}")
    record_property("int8_top1_confident", f"{agree_confident}/{confident}")
    record_property("int8_greedy_prefix_tokens", f"{greedy_equal}/72")
    print(f"int8 top-1 agreement: all {agree_all}/{total}, confident {agree_confident}/{confident}; "
          f"greedy tokens equal before the first divergence: {greedy_equal}/72")  # fmt: skip
    assert confident > 0
    assert agree_confident >= 0.98 * confident
    assert agree_all >= 0.8 * total


def test_shared_kv_buffers_grow_and_match_plain_runs(tiny_dirs, tiny_int8, pack):
    """The fused graph's in-place KV buffers give the logits of plain session.run calls with a concatenated
    cache, also when a prompt is fed in two chunks and the buffers outgrow their first capacity."""
    from export import parity

    assert tiny_int8.manifest.kv_buffer == "shared"
    prompt = pack["chat0_ids"].tolist()
    tokens = pack["chat0_greedy"].tolist()[:12]
    half = len(prompt) // 2  # the chunks parity.teacher_forced uses (int8 rounding depends on the chunking)
    sequence = tiny_int8.new_sequence(capacity=4)
    sequence.feed(prompt[:half])
    rows = [sequence.feed(prompt[half:]).copy()]
    rows += [sequence.feed([token]).copy() for token in tokens]
    assert sequence.length == len(prompt) + len(tokens)
    assert sequence.capacity >= sequence.length > 4
    session = parity.open_session(tiny_int8.model_file, threads=1)  # the int8 form chosen for this CPU
    expected = parity.teacher_forced(session, prompt + tokens, len(prompt))
    np.testing.assert_allclose(np.stack(rows), expected, atol=1e-5, rtol=0)


def test_base_io_contract_still_runs(reference, assets, pack, tmp_path):
    """A traced export (no "kv_buffer" in model.json: the graph concatenates, as for MoE) decodes too."""
    from export.cli import main as export_main

    out = tmp_path / "traced"
    tokenizer = assets / "minimind-tokenizer" / "minimind2" / "tokenizer.json"
    argv = [str(reference / TINY), "--out", str(out), "--quant", "fp32", "--tokenizer", str(tokenizer)]
    assert export_main([*argv, "--graph", "traced"]) == 0
    model = MiniMindOnnx(out, threads=1)
    assert model.manifest.kv_buffer is None
    prompt = pack["chat2_ids"].tolist()
    assert list(model.generate(prompt, GREEDY)) == pack["chat2_greedy"].tolist()


def test_unknown_io_or_kv_buffer_is_model_error(tiny_dirs, tmp_path):
    broken = tmp_path / "future"
    shutil.copytree(tiny_dirs["int8"], broken)
    good = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**good, "io": "paged-kv"}))
    with pytest.raises(ModelError, match=r"graph I/O variant 'paged-kv'.*re-export"):
        MiniMindOnnx(broken)
    (broken / "model.json").write_text(json.dumps({**good, "kv_buffer": "paged"}))
    with pytest.raises(ModelError, match=r"kv_buffer 'paged'"):
        MiniMindOnnx(broken)


def test_max_new_tokens(tiny_fp32, pack):
    prompt = pack["chat1_ids"].tolist()
    out = list(tiny_fp32.generate(prompt, Sampling(greedy=True, max_new_tokens=5)))
    assert out == pack["chat1_greedy"].tolist()[:5]


def test_context_guard(tiny_fp32, pack):
    prompt = pack["chat1_ids"].tolist()
    limited = MiniMindOnnx(tiny_fp32.model_dir, threads=1, max_context_tokens=len(prompt) + 4)
    assert list(limited.generate(prompt, GREEDY)) == pack["chat1_greedy"].tolist()[:4]
    with pytest.raises(ValueError, match="context"):
        list(limited.generate(prompt * 2, GREEDY))


def test_seeded_sampling_reproducible(tiny_fp32, pack):
    prompt = pack["chat0_ids"].tolist()

    def sample(seed: int) -> list[int]:
        return list(
            tiny_fp32.generate(prompt, Sampling(temperature=1.0, top_p=0.95, max_new_tokens=24, seed=seed))
        )

    first = sample(7)
    assert len(first) == 24
    assert sample(7) == first
    assert sample(8) != first
    assert first != pack["chat0_greedy"].tolist()


def test_cancel_between_tokens(tiny_fp32, pack):
    cancel = threading.Event()
    out = []
    for token in tiny_fp32.generate(
        pack["chat0_ids"].tolist(), Sampling(greedy=True, max_new_tokens=200), cancel
    ):
        out.append(token)
        if len(out) == 3:
            cancel.set()
    assert out == pack["chat0_greedy"].tolist()[:3]


def test_cancel_from_another_thread(tiny_fp32, pack):
    """The daemon cancels from its event loop while a worker thread consumes the generator."""
    cancel = threading.Event()
    started = threading.Event()
    produced: list[int] = []

    def worker() -> None:
        for token in tiny_fp32.generate(pack["chat0_ids"].tolist(), Sampling(max_new_tokens=100_000), cancel):
            produced.append(token)
            started.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(30)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    # Far fewer than the context allows: the loop noticed the event.
    assert 1 <= len(produced) < 5000


def test_stops_at_eos_without_yielding_it(eos_model_dir, pack):
    model = MiniMindOnnx(eos_model_dir, threads=1)
    out = list(model.generate(pack["chat1_ids"].tolist(), Sampling(greedy=True, max_new_tokens=50)))
    assert out == pack["chat1_greedy"].tolist()[:3]
    sampled = list(model.generate(pack["chat1_ids"].tolist(), Sampling(max_new_tokens=50, seed=1)))
    assert len(sampled) == 3
    assert 2 not in sampled


def test_missing_files_name_the_fix(tiny_dirs, tmp_path):
    empty = tmp_path / "minimind"
    empty.mkdir()
    with pytest.raises(ModelError) as info:
        MiniMindOnnx(empty)
    message = str(info.value)
    assert str(empty / "model.onnx") in message
    assert "assistant models fetch minimind2-small" in message
    assert "assistant-export" in message
    demo = tmp_path / "minimind-demo"
    shutil.copytree(tiny_dirs["fp32"], demo)
    (demo / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json.*python -m training\.recipes\.demo"):
        MiniMindOnnx(demo)


def test_corrupt_onnx_is_model_error(tiny_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["fp32"], broken)
    data = (broken / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=str(broken / "model.onnx")):
        MiniMindOnnx(broken)
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    with pytest.raises(ModelError, match="corrupt"):
        MiniMindOnnx(broken)


def test_bad_manifest_is_model_error(tiny_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["fp32"], broken)
    manifest = broken / "model.json"
    manifest.write_text("{")
    with pytest.raises(ModelError, match=str(manifest)):
        load_manifest(broken)
    manifest.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ModelError, match="format"):
        load_manifest(broken)
    good = json.loads((tiny_dirs["fp32"] / "model.json").read_text())
    del good["architecture"]["num_key_value_heads"]
    manifest.write_text(json.dumps(good))
    with pytest.raises(ModelError, match="architecture"):
        load_manifest(broken)


def test_manifest_layers_must_match_graph(tiny_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["fp32"], broken)
    manifest = json.loads((broken / "model.json").read_text())
    manifest["architecture"]["num_hidden_layers"] = 3
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="past_key.2"):
        MiniMindOnnx(broken)


# --- sampling on plain logits ---


def _logits(seed: int = 0, vocab: int = 6400) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, vocab).astype(np.float32)


def test_sampler_greedy_and_degenerate_filters_agree():
    logits = _logits()
    best = int(np.argmax(logits))
    assert Sampler(Sampling(greedy=True), logits.size)(logits) == best
    assert Sampler(Sampling(temperature=0.0), logits.size)(logits) == best
    assert Sampler(Sampling(top_k=1, seed=3), logits.size)(logits) == best
    assert Sampler(Sampling(top_p=1e-6, seed=3), logits.size)(logits) == best


def test_sampler_top_k_and_top_p_limit_the_candidates():
    logits = _logits(1)
    top5 = set(np.argsort(logits)[-5:].tolist())
    sampler = Sampler(Sampling(temperature=5.0, top_k=5, top_p=1.0, seed=0), logits.size)
    assert {sampler(logits) for _ in range(300)} == top5
    # Two tokens hold ~all the mass: top_p 0.9 keeps exactly those two.
    peaked = np.full(100, -50.0, dtype=np.float32)
    peaked[[10, 20]] = [5.0, 4.5]
    sampler = Sampler(Sampling(temperature=1.0, top_p=0.9, seed=0), peaked.size)
    assert {sampler(peaked) for _ in range(300)} == {10, 20}
    sampler = Sampler(Sampling(temperature=1.0, top_p=0.5, seed=0), peaked.size)
    assert {sampler(peaked) for _ in range(100)} == {10}


def test_sampler_seeded_reproducible():
    logits = _logits(2)
    a = Sampler(Sampling(seed=42), logits.size)
    b = Sampler(Sampling(seed=42), logits.size)
    assert [a(logits) for _ in range(50)] == [b(logits) for _ in range(50)]


def test_repetition_penalty_discourages_seen_tokens():
    logits = np.array([0.0, 3.0, 2.9, -1.0], dtype=np.float32)
    plain = Sampler(Sampling(greedy=True), 4, prompt_ids=[1])
    penalised = Sampler(Sampling(greedy=True, repetition_penalty=1.3), 4, prompt_ids=[1])
    assert plain(logits) == 1
    assert penalised(logits) == 2
    # Its own output counts as seen too: 2 is now penalised, 1 still is, so 1 (3.0/1.3) wins over 2 (2.9/1.3).
    assert penalised(logits) == 1
    np.testing.assert_array_equal(logits, np.array([0.0, 3.0, 2.9, -1.0], dtype=np.float32))  # untouched


@pytest.mark.parametrize(
    "bad", [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"max_new_tokens": 0}]
)
def test_sampling_rejects_bad_settings(bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=name):
        Sampling(**bad)
