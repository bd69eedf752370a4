"""minimind-3 end to end against its conformance pack (../shared/reference/minimind3): torch, fp32 ONNX (fused,
traced, MoE), the runtime, the chat template with its thinking switch, and the refusals of mixed generations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ModelError
from assistant.llm.chat import Conversation
from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from assistant.llm.think import ThinkFilter
from assistant.llm.tokenizer import Tokenizer, Turn, render_chat

torch = pytest.importorskip("torch")

from tests.support.conformance import check_against_pack  # noqa: E402
from tests.support.models import teacher_forced_logits  # noqa: E402
from training.model import MiniMindConfig, minimind3_config  # noqa: E402
from training.weights import load_model, save_hf_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PACKS = ["minimind3-dense-tiny", "minimind3-moe-tiny"]
CHATS = [f"chat{i}{suffix}" for i in range(3) for suffix in ("", "_think")]
GREEDY = Sampling(greedy=True, max_new_tokens=24)
TOL = 1e-4


@pytest.fixture(scope="module")
def pack_dir(reference: Path) -> Path:
    return reference / "minimind3"


@pytest.fixture(scope="module")
def tokenizer_dir(assets: Path) -> Path:
    return assets / "minimind-tokenizer" / "minimind-3"


def manifest(pack_dir: Path) -> dict:
    return json.loads((pack_dir / "manifest.json").read_text())


def export(checkpoint: Path, out: Path, tokenizer: Path, *extra: str) -> Path:
    from export.cli import main as export_main

    rc = export_main([str(checkpoint), "--out", str(out), "--tokenizer", str(tokenizer), *extra])
    assert rc == 0, "assistant-export failed"
    return out


@pytest.fixture(scope="module")
def exported(pack_dir: Path, tokenizer_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm3")
    dense = pack_dir / "minimind3-dense-tiny-random.pth"
    return {
        "fused": export(dense, root / "fused", tokenizer_dir, "--quant", "fp32"),
        "traced": export(dense, root / "traced", tokenizer_dir, "--quant", "fp32", "--graph", "traced"),
        "moe": export(pack_dir / "minimind3-moe-tiny-random.pth", root / "moe", tokenizer_dir, "--quant", "fp32"),
    }


# -- torch


@pytest.mark.parametrize("name", PACKS)
def test_torch_matches_pack_from_keys_alone(pack_dir: Path, name: str) -> None:
    model, config = load_model(pack_dir / f"{name}-random.pth")
    # No config: generation, head_dim (q_norm's size) and top-1 all come from the keys.
    assert config == MiniMindConfig.from_dict(manifest(pack_dir)[name]["config"])
    assert config.generation == "minimind3" and config.qk_norm
    assert sum(p.numel() for p in model.parameters()) == manifest(pack_dir)[name]["params"]
    ref = np.load(pack_dir / f"{name}-reference.npz")
    check_against_pack(model, ref)  # prompts' full logits and chat0..2 greedy + decode logits
    with torch.no_grad():  # the thinking prompts too
        for i in range(3):
            ids = torch.tensor(ref[f"chat{i}_think_ids"])[None]
            last = model(ids).logits[0, -1].numpy()
            np.testing.assert_allclose(last, ref[f"chat{i}_think_decode_logits"][0], atol=TOL, rtol=0)


def test_official_config_json_and_hf_dir(pack_dir: Path, tmp_path: Path) -> None:
    name = "minimind3-moe-tiny"
    official = manifest(pack_dir)[name]["config"]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.pth").write_bytes((pack_dir / f"{name}-random.pth").read_bytes())
    (tmp_path / "w" / "config.json").write_text(json.dumps(official))
    model, config = load_model(tmp_path / "w" / "model.pth")
    assert config.generation == "minimind3" and config.n_routed_experts == 4 and config.n_shared_experts == 0
    save_hf_dir(model, config, tmp_path / "hf")
    _, again = load_model(tmp_path / "hf")
    assert again == config


def test_real_shapes_match_the_tsvs(pack_dir: Path) -> None:
    for tsv, moe in (("minimind3-state-dict.tsv", False), ("minimind3-moe-state-dict.tsv", True)):
        with torch.device("meta"):
            from training.model import MiniMindForCausalLM

            model = MiniMindForCausalLM(minimind3_config(use_moe=moe))
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        rows = [line.split("\t") for line in (pack_dir / tsv).read_text().splitlines()[1:]]
        assert ours == {key: tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
                        for key, shape, _ in rows}  # fmt: skip


def test_generation_logged(pack_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="training.weights")
    load_model(pack_dir / "minimind3-dense-tiny-random.pth")
    assert "generation minimind-3 (from the keys)" in caplog.text


def test_unknown_generation_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    state = {"transformer.wte.weight": torch.zeros(8, 4), "transformer.h.0.attn.c_attn.weight": torch.zeros(4)}
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"other\.pth: not a checkpoint of a known MiniMind gen.*transformer\.wte"):
        load_model(path)


def test_config_of_the_other_generation_is_refused(pack_dir: Path, tmp_path: Path) -> None:
    mm2 = json.loads((pack_dir.parent / "minimind2" / "manifest.json").read_text())["minimind2-dense-tiny"]["config"]
    (tmp_path / "model.pth").write_bytes((pack_dir / "minimind3-dense-tiny-random.pth").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(mm2))
    with pytest.raises(ModelError, match=r"model\.pth: the config says MiniMind2 but the keys are minimind-3's"):
        load_model(tmp_path / "model.pth")


def test_minimind2_checkpoint_still_minimind2(reference: Path) -> None:
    _, config = load_model(reference / "minimind2" / "minimind2-dense-tiny-random.pth")
    assert config.generation == "minimind2" and not config.qk_norm


# -- export and runtime


@pytest.mark.parametrize("graph", ["fused", "traced"])
@pytest.mark.parametrize("chat", CHATS)
def test_dense_runtime_matches_pack(exported, pack_dir: Path, graph: str, chat: str) -> None:
    ref = np.load(pack_dir / "minimind3-dense-tiny-reference.npz")
    model = MiniMindOnnx(exported[graph], threads=1)
    prompt, greedy = ref[f"{chat}_ids"].tolist(), ref[f"{chat}_greedy"].tolist()
    assert list(model.generate(prompt, GREEDY)) == greedy
    logits = teacher_forced_logits(model, prompt, greedy)
    np.testing.assert_allclose(logits, ref[f"{chat}_decode_logits"], atol=TOL, rtol=0)


@pytest.mark.parametrize("chat", CHATS)
def test_moe_runtime_matches_pack(exported, pack_dir: Path, chat: str) -> None:
    ref = np.load(pack_dir / "minimind3-moe-tiny-reference.npz")
    model = MiniMindOnnx(exported["moe"], threads=1)
    prompt, greedy = ref[f"{chat}_ids"].tolist(), ref[f"{chat}_greedy"].tolist()
    assert list(model.generate(prompt, GREEDY)) == greedy
    logits = teacher_forced_logits(model, prompt, greedy)
    np.testing.assert_allclose(logits, ref[f"{chat}_decode_logits"], atol=TOL, rtol=0)


def test_model_json_records_generation(exported) -> None:
    for kind, graph in (("fused", "fused"), ("traced", "traced"), ("moe", "traced")):
        data = json.loads((exported[kind] / "model.json").read_text())
        assert data["generation"] == "minimind3"
        assert "thinking" in data["chat_template"]
        assert data["graph"] == graph
        assert data["architecture"]["head_dim"] == (64 if kind != "moe" else 32)


def test_int8_requantize(exported, tmp_path: Path) -> None:
    from export.cli import main as export_main

    assert export_main(["requantize", str(exported["fused"]), "--out", str(tmp_path / "int8"), "--quant", "int8"]) == 0
    data = json.loads((tmp_path / "int8" / "model.json").read_text())
    assert data["generation"] == "minimind3" and data["parity"]["int8_vs_fp32"]


def test_export_refuses_minimind2_tokenizer(pack_dir: Path, assets: Path, tmp_path: Path, capsys) -> None:
    from export.cli import main as export_main

    mm2_tokenizer = assets / "minimind-tokenizer" / "minimind2"
    checkpoint = pack_dir / "minimind3-dense-tiny-random.pth"
    argv = [str(checkpoint), "--out", str(tmp_path / "o"), "--tokenizer", str(mm2_tokenizer)]
    assert export_main(argv) == 4
    err = capsys.readouterr().err
    assert "minimind2/tokenizer.json is the MiniMind2 tokenizer" in err
    assert "minimind3-dense-tiny-random.pth is a minimind-3 model" in err
    assert not (tmp_path / "o").exists()


def test_export_refuses_minimind3_tokenizer_for_minimind2(reference: Path, tokenizer_dir: Path, tmp_path, capsys):
    from export.cli import main as export_main

    checkpoint = reference / "minimind2" / "minimind2-dense-tiny-random.pth"
    assert export_main([str(checkpoint), "--out", str(tmp_path / "o"), "--tokenizer", str(tokenizer_dir)]) == 4
    assert "is the minimind-3 tokenizer" in capsys.readouterr().err


def test_runtime_refuses_tokenizer_of_other_generation(exported, assets: Path) -> None:
    model = MiniMindOnnx(exported["fused"], threads=1)
    wrong = Tokenizer(assets / "minimind-tokenizer" / "minimind2" / "tokenizer.json")
    with pytest.raises(ModelError, match=r"minimind2/tokenizer\.json is the MiniMind2 tokenizer but .*model\.json"):
        Conversation(model, wrong)


# -- chat template and thinking


def test_template_matches_pack(pack_dir: Path, tokenizer_dir: Path) -> None:
    tok = Tokenizer(tokenizer_dir / "tokenizer.json")
    assert tok.generation == "minimind3"
    info = manifest(pack_dir)["minimind3-dense-tiny"]
    ref = np.load(pack_dir / "minimind3-dense-tiny-reference.npz")
    for i, question in enumerate(info["questions"]):
        assert tok.chat_ids(question) == ref[f"chat{i}_ids"].tolist()
        assert tok.chat_ids(question, open_thinking=True) == ref[f"chat{i}_think_ids"].tolist()
        assert render_chat(question, generation="minimind3") == info["chat_texts"][f"chat{i}"]
        assert render_chat(question, generation="minimind3", open_thinking=True) == info["chat_texts"][f"chat{i}_think"]


def test_history_turns_have_an_empty_think_block(tokenizer_dir: Path) -> None:
    tok = Tokenizer(tokenizer_dir / "tokenizer.json")
    history = [Turn("hi", "Hello!")]
    text = render_chat("and?", generation="minimind3", history=history)
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n" in text
    # By ids as by the tokenizer on the whole rendered text (<think> is an added token, matched in text).
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert tok.chat_ids("and?", history=history) == plain.encode(text, add_special_tokens=False).ids


def test_conversation_default_reply_is_the_greedy_text(exported, pack_dir: Path) -> None:
    ref = np.load(pack_dir / "minimind3-dense-tiny-reference.npz")
    tok = Tokenizer.from_dir(exported["fused"])
    chat = Conversation(MiniMindOnnx(exported["fused"], threads=1), tok)
    question = manifest(pack_dir)["minimind3-dense-tiny"]["questions"][1]
    reply = "".join(chat.stream(question, GREEDY))
    assert chat.last_stats.prompt_tokens == len(ref["chat1_ids"])
    assert reply == tok.decode(ref["chat1_greedy"].tolist()).lstrip("\n")
    assert chat.last_thinking == ""


def test_open_thinking_block_is_never_reply_text(exported, pack_dir: Path) -> None:
    # Random weights never close the block: all 24 tokens are reasoning, and the reply is empty.
    ref = np.load(pack_dir / "minimind3-dense-tiny-reference.npz")
    tok = Tokenizer.from_dir(exported["fused"])
    chat = Conversation(MiniMindOnnx(exported["fused"], threads=1), tok, open_thinking=True)
    question = manifest(pack_dir)["minimind3-dense-tiny"]["questions"][0]
    pieces = list(chat.stream(question, GREEDY))
    assert chat.last_stats.prompt_tokens == len(ref["chat0_think_ids"])
    assert chat.last_stats.tokens == 24
    assert pieces == []
    assert chat.last_thinking == tok.decode(ref["chat0_think_greedy"].tolist()).strip("\n")
    assert chat.history == [Turn(question, "")]


@pytest.mark.parametrize(
    ("inside", "pieces", "reply", "thinking"),
    [
        (True, ["Let me", " think.\n", "</think>", "\n\n", "Paris."], "Paris.", "Let me think."),
        (True, ["a", "</th", "ink>", "\n\nb"], "b", "a"),  # a tag spelled over pieces
        (False, ["<think>", "\n", "plan", "\n", "</think>", "\n\n", "Hi ", "<", "3"], "Hi <3", "plan"),
        (False, ["x < y and <thin", "g>"], "x < y and <thing>", ""),  # a false start is text again
        (False, ["ok", "</think>", " fine"], "ok fine", ""),  # a stray close tag is dropped
        (True, ["never", " closed <"], "", "never closed <"),  # reasoning cut off: never spoken
    ],
)
def test_think_filter(inside: bool, pieces: list[str], reply: str, thinking: str) -> None:
    f = ThinkFilter(inside=inside)
    out = "".join(f.push(p) for p in pieces) + f.flush()
    assert (out, f.thinking) == (reply, thinking)
    assert "<think>" not in out and "</think>" not in out


def test_ask_json_show_thinking(exported, pack_dir: Path) -> None:
    tok = Tokenizer.from_dir(exported["fused"])
    ref = np.load(pack_dir / "minimind3-dense-tiny-reference.npz")
    question = manifest(pack_dir)["minimind3-dense-tiny"]["questions"][0]
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "ask", "--json", "--greedy", "--max-new-tokens", "24", "--think",
         "--show-thinking", "--model-dir", str(exported["fused"]), question],
        capture_output=True, text=True, encoding="utf-8", timeout=120, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e for e in events if e["event"] == "token"] == []  # nothing of the block is sent as text
    assert events[-1]["text"] == ""
    assert events[-1]["thinking"] == tok.decode(ref["chat0_think_greedy"].tolist()).strip("\n")


# -- training


def test_training_a_minimind3_model_exports_and_answers(tmp_path: Path, assets: Path) -> None:
    from assistant.errors import ConfigError
    from tests.support.training import identity_records, train_tiny, write_jsonl

    tokenizer = assets / "minimind-tokenizer" / "minimind-3"
    data = write_jsonl(tmp_path / "eight.jsonl", identity_records(8))
    settings = dict(generation="minimind3", batch_size=8, steps=50, lr=1e-2, min_lr_ratio=1.0, weight_decay=0.0)
    with pytest.raises(ConfigError, match="is not the minimind-3 tokenizer"):
        train_tiny("sft", tmp_path / "wrong", data, steps=1, generation="minimind3")  # the MiniMind2 tokenizer
    result = train_tiny("sft", tmp_path / "run", data, tokenizer=str(tokenizer), **settings)
    config = json.loads((result.final_path.parent / "config.json").read_text())
    assert config["generation"] == "minimind3"
    out = export(result.final_path, tmp_path / "exported", tokenizer, "--quant", "fp32")
    chat = Conversation(MiniMindOnnx(out, threads=1), Tokenizer.from_dir(out))
    record = identity_records(8)[2]
    reply = "".join(chat.stream(record["conversations"][0]["content"], Sampling(greedy=True, max_new_tokens=30)))
    assert len(reply) > 5
    assert record["conversations"][1]["content"].startswith(reply)


def test_eval_takes_the_generation_tokenizer_and_refuses_the_other(pack_dir: Path, assets: Path, capsys) -> None:
    from training.eval import main

    mc = assets / "datasets" / "mmlu" / "dev" / "anatomy_dev.csv"
    checkpoint = str(pack_dir / "minimind3-dense-tiny-random.pth")
    assert main([checkpoint, "--mc", str(mc)]) == 0  # no tokenizer beside: minimind-3's by default
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])[f"mc:{mc}"] >= 0
    wrong = assets / "minimind-tokenizer" / "minimind2"
    assert main([checkpoint, "--tokenizer", str(wrong), "--mc", str(mc)]) == 4
    assert "is not the tokenizer of" in capsys.readouterr().err
