"""A checkpoint written by training exports with assistant-export and runs in the daemon's generator; the eval
tool scores the torch checkpoint and the exported directory alike."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assistant.llm.runtime import MiniMindOnnx
from assistant.llm.sampling import Sampling
from tests.conftest import REPO, require
from tests.support.training import TOKENIZER, identity_records, overfit_eight
from training.data import load_tokenizer, render_chat
from training.eval import OnnxLM, TorchLM, choice_accuracy, read_choices


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("exp")
    result = overfit_eight(work, "sft")
    out = work / "exported"
    # No --tokenizer: training left tokenizer.json and config.json beside the .pth.
    proc = subprocess.run(
        [sys.executable, "-m", "export.cli", str(result.final_path), "--out", str(out), "--quant", "fp32"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result.final_path, out


def test_exported_checkpoint_answers_like_training_taught_it(trained):
    pth, exported = trained
    tok = load_tokenizer(require(TOKENIZER))
    record = identity_records(8)[2]
    prompt, _ = render_chat([record["conversations"][0]], add_generation_prompt=True)
    ids = tok.encode(prompt, add_special_tokens=False).ids
    torch_reply = TorchLM(pth).greedy(ids, 40)
    runtime = MiniMindOnnx(exported, threads=1)
    onnx_reply = list(runtime.generate(ids, Sampling(greedy=True, max_new_tokens=40)))
    assert onnx_reply == torch_reply
    assert tok.decode(onnx_reply) == record["conversations"][1]["content"][: len(tok.decode(onnx_reply))]
    assert OnnxLM(exported).greedy(ids, 40) == torch_reply


def test_eval_scores_torch_and_onnx_alike(trained, assets, tmp_path):
    pth, exported = trained
    tok = load_tokenizer(require(TOKENIZER))
    questions = read_choices(require(assets / "datasets" / "ceval" / "val" / "computer_network_val.csv"))[:6]
    assert all(q.answer in "ABCD" for q in questions)
    acc_torch = choice_accuracy(TorchLM(pth), questions, tok)
    acc_onnx = choice_accuracy(OnnxLM(exported), questions, tok)
    assert acc_torch == acc_onnx  # fp32 export: the same letters win
