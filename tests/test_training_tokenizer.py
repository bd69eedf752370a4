"""The tokenizer stage: byte-level BPE with MiniMind's three specials at ids 0, 1, 2 and a chat template."""

from __future__ import annotations

import json

from tests.conftest import require
from tests.support.training import IDENTITY
from training.tokenizer import TokenizerSettings, train_tokenizer


def test_trained_tokenizer_has_minimind_specials_and_round_trips(tmp_path):
    out = train_tokenizer(
        TokenizerSettings(data=str(require(IDENTITY)), out_dir=str(tmp_path), vocab_size=400)
    )
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert tok.get_vocab_size() == 400
    text = "<|im_start|>user\n你好，MiniMind! 1+1=2<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=False) == text
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["eos_token"] == "<|im_end|>" and "<|im_start|>" in config["chat_template"]
