"""Checks against the official conformance packs (../shared/reference): torch models and onnxruntime exports."""

from __future__ import annotations

import numpy as np
import torch

from training.model import MiniMindForCausalLM

TOL = 1e-4


def greedy_with_cache(
    model: MiniMindForCausalLM, prompt: np.ndarray, steps: int
) -> tuple[list[int], np.ndarray]:
    with torch.no_grad():
        out = model(torch.tensor(prompt)[None], use_cache=True, logits_to_keep=1)
        tokens, logits = [], []
        for _ in range(steps):
            last = out.logits[0, -1]
            logits.append(last.numpy())
            tokens.append(int(last.argmax()))
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, np.stack(logits)


def check_against_pack(model: MiniMindForCausalLM, ref: np.lib.npyio.NpzFile) -> None:
    with torch.no_grad():
        for i in range(4):
            logits = model(torch.tensor(ref[f"prompt{i}_ids"])[None]).logits[0].numpy()
            np.testing.assert_allclose(logits, ref[f"prompt{i}_logits"], atol=TOL, rtol=0)
    for i in range(3):
        tokens, logits = greedy_with_cache(model, ref[f"chat{i}_ids"], len(ref[f"chat{i}_greedy"]))
        assert tokens == ref[f"chat{i}_greedy"].tolist()
        np.testing.assert_allclose(logits, ref[f"chat{i}_decode_logits"], atol=TOL, rtol=0)
