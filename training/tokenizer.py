"""Train a byte-level BPE tokenizer the way MiniMind's is built: vocab 6400, specials <|endoftext|>=0,
<|im_start|>=1, <|im_end|>=2, and a ChatML chat template in tokenizer_config.json.

Reads `{"text": ...}` lines (pretrain format) or `{"conversations": [...]}` lines (the message contents),
streaming; writes OUT/tokenizer.json and OUT/tokenizer_config.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from assistant.errors import ConfigError
from training.cli import report_errors, setup_logging
from training.data import JsonlFile
from training.settings import parse, setting

log = logging.getLogger(__name__)

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# ChatML as MiniMind2 renders it (no tools): a default system turn when the chat has none.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if not (loop.first and message['role'] == 'system') -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TokenizerSettings:
    data: str = setting("dataset/pretrain_hq.jsonl", 'jsonl with {"text"} or {"conversations"} lines')
    out_dir: str = setting("out/tokenizer", "where tokenizer.json and tokenizer_config.json are written")
    vocab_size: int = setting(6400, "vocabulary size including the 3 special tokens")
    max_records: int = setting(0, "train on at most this many records (0: all)")
    on_bad_line: str = setting("error", "a malformed jsonl line: 'error' stops with file:line, 'skip' skips it")


def texts(file: JsonlFile, limit: int = 0) -> Iterator[str]:
    n = len(file) if limit <= 0 else min(limit, len(file))
    for i in range(n):
        record = file.read(i)
        if record is None:
            continue
        if isinstance(record.get("text"), str):
            yield record["text"]
        elif isinstance(record.get("conversations"), list):
            for msg in record["conversations"]:
                if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                    yield msg["content"]
        else:
            file.bad(i, 'expected {"text": ...} or {"conversations": [...]}')


def config_json() -> dict:
    added = {
        str(i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, tok in enumerate(SPECIALS)
    }
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [],
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 32768,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def train_tokenizer(settings: TokenizerSettings) -> Path:
    file = JsonlFile(settings.data, on_bad_line=settings.on_bad_line)
    if settings.vocab_size <= len(SPECIALS) + 256:
        raise ConfigError(f"--vocab-size {settings.vocab_size} is too small for 256 bytes + 3 specials")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(file, settings.max_records), trainer=trainer)
    for i, special in enumerate(SPECIALS):
        if tok.token_to_id(special) != i:
            raise AssertionError(f"special token {special} did not get id {i}")  # the trainer's contract
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(config_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    log.info("tokenizer: %d tokens from %s -> %s", tok.get_vocab_size(), settings.data, out)
    return out


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    settings = parse(TokenizerSettings, argv, prog="python -m training.tokenizer", description=__doc__)
    return report_errors("training.tokenizer", lambda: train_tokenizer(settings))


if __name__ == "__main__":
    raise SystemExit(main())
