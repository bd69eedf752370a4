"""Training data: chat rendering and loss masks (token by token), jsonl streaming, bad inputs, truncation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REFERENCE, require
from training.data import (
    IGNORE,
    DataError,
    Dataset,
    JsonlFile,
    collate,
    encode_pretrain,
    encode_sft,
    load_tokenizer,
    make_reason_encoder,
    render_chat,
    sample_indices,
)


@pytest.fixture(scope="module")
def tok(assets):
    return load_tokenizer(require(assets / "minimind-tokenizer" / "minimind2"))


@pytest.fixture(scope="module")
def identity(assets) -> Path:
    return require(assets / "datasets" / "minimind-lora-identity" / "lora_identity.jsonl")


def test_chat_prompt_matches_the_official_template(tok):
    # The conformance pack's chat prompts were rendered by the official template: same text, same ids.
    pack = np.load(require(REFERENCE / "minimind2" / "minimind2-dense-tiny-reference.npz"))
    ids = pack["chat0_ids"].tolist()
    text = tok.decode(ids, skip_special_tokens=False)
    question = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    rendered, spans = render_chat([{"role": "user", "content": question}], add_generation_prompt=True)
    assert rendered == text
    assert spans == []
    assert tok.encode(rendered, add_special_tokens=False).ids == ids


def test_sft_loss_mask_covers_exactly_the_assistant_turns(tok, identity):
    records = [json.loads(line) for line in identity.read_text(encoding="utf-8").splitlines()[:10]]
    multi = {
        "conversations": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！我是助手。"},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": " 2"},
        ]
    }
    for record in [*records, multi]:
        enc = encode_sft(record, tok, max_length=4096)
        targets = [i for i, w in zip(enc.ids, enc.weights, strict=True) if w > 0]
        expected = []
        for msg in record["conversations"]:
            if msg["role"] == "assistant":
                expected += tok.encode(msg["content"], add_special_tokens=False).ids + [2]
        assert targets == expected
        # Token by token: each non-target is part of the system/user turns or the role headers.
        text, _ = render_chat(record["conversations"])
        for i, w in zip(enc.ids, enc.weights, strict=True):
            if w == 0:
                piece = tok.decode([i], skip_special_tokens=False)
                assert piece in text
        batch = collate([enc])
        for t in range(len(enc.ids) - 1):
            if enc.weights[t + 1] > 0:
                assert batch.labels[0, t] == enc.ids[t + 1]
            else:
                assert batch.labels[0, t] == IGNORE


def test_reason_tags_get_extra_weight(tok):
    record = {
        "conversations": [
            {"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": "<think>2 plus 3</think><answer>5</answer>"},
        ]
    }
    enc = make_reason_encoder(10.0)(record, tok, 4096)
    heavy = "".join(tok.decode([i]) for i, w in zip(enc.ids, enc.weights, strict=True) if w == 10.0)
    assert heavy == "<think></think><answer></answer>"
    light = "".join(tok.decode([i]) for i, w in zip(enc.ids, enc.weights, strict=True) if w == 1.0)
    assert light == "2 plus 35"  # the content (and the final <|im_end|>, which decodes to nothing)


def test_pretrain_frames_text_and_truncates(tok):
    enc = encode_pretrain({"text": "今天天气很好。" * 50}, tok, 16)
    assert enc.ids[0] == 1 and len(enc.ids) == 16 and enc.truncated
    short = encode_pretrain({"text": "hello"}, tok, 16)
    assert short.ids[-1] == 2 and not short.truncated
    batch = collate([enc, short])
    assert batch.truncated == 1 and batch.examples == 2
    assert batch.input_ids.shape == (2, 16)
    assert (batch.labels[1, len(short.ids) - 1 :] == IGNORE).all()  # padding is never a target


def test_malformed_line_is_named_with_file_and_line(tmp_path, tok):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "fine"}\n{not json\n{"txt": "wrong key"}\n', encoding="utf-8")
    data = Dataset(path, encode_pretrain, tok, max_length=32)
    assert len(data) == 4  # the blank line is not a record
    assert data.get(0) is not None
    with pytest.raises(DataError, match=rf"{path}:4: malformed JSON"):
        data.get(2)
    with pytest.raises(DataError, match=rf"{path}:5: expected"):
        data.get(3)
    skipping = Dataset(path, encode_pretrain, tok, max_length=32, on_bad_line="skip")
    assert len(skipping.items([0, 1, 2, 3])) == 2
    assert skipping.file.bad_lines == 2


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        JsonlFile(empty)
    with pytest.raises(DataError, match="not found"):
        JsonlFile(tmp_path / "missing.jsonl")


def test_sample_order_is_a_pure_function_of_position():
    whole = sample_indices(7, 0, 20, seed=3)
    assert sample_indices(7, 0, 9, seed=3) + sample_indices(7, 9, 11, seed=3) == whole
    assert sorted(whole[:7]) == list(range(7))  # each epoch is a permutation
    assert whole != sample_indices(7, 0, 20, seed=4)
