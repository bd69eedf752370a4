"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty (numpy only).

The defaults are MiniMind's official chat settings (temperature 0.85, top_p 0.85).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from assistant.errors import ConfigError
from assistant.settings import LlmSettings


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. `greedy=True` (or temperature 0) takes the most likely token every step."""

    temperature: float = 0.85
    top_p: float = 0.85  # keep the smallest set of tokens whose probability sums to at least this; 1.0 = off
    top_k: int = 0  # keep only the k most likely tokens; 0 = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or the reply; 1.0 = off
    max_new_tokens: int = 256
    seed: int | None = None  # None: a fresh random seed per reply
    greedy: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("temperature", self.temperature >= 0.0, "must be >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0"),
            ("repetition_penalty", self.repetition_penalty > 0.0, "must be > 0"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"sampling setting {name}={getattr(self, name)!r} {rule}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0.0


_NUCLEUS_WIDTHS = (64, 512)  # candidate counts tried before sorting everything for top-p


class Sampler:
    """Picks tokens for one reply; holds the random generator and which tokens were seen."""

    def __init__(self, sampling: Sampling, vocab_size: int, prompt_ids: Iterable[int] = ()) -> None:
        self.sampling = sampling
        self._rng = np.random.default_rng(sampling.seed)
        self._penalise = sampling.repetition_penalty != 1.0
        # Boolean mask rather than a set: the penalty is then one vectorised np.where per step.
        self._seen = np.zeros(vocab_size, dtype=bool)
        if self._penalise:
            self._seen[np.fromiter(prompt_ids, dtype=np.int64)] = True

    def __call__(self, logits: np.ndarray) -> int:
        """The next token id from float32 logits [vocab] (not modified)."""
        s = self.sampling
        if self._penalise:
            seen = self._seen
            # HF/CTRL convention: shrink positive logits, push negative ones further down.
            penalised = np.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
            logits = np.where(seen, penalised, logits)
        if s.is_greedy:
            token = int(np.argmax(logits))
        else:
            token = self._sample(logits)
        if self._penalise:
            self._seen[token] = True
        return token

    def _sample(self, logits: np.ndarray) -> int:
        s = self.sampling
        scaled = logits / np.float32(s.temperature)
        weights = np.exp(scaled - scaled.max())  # unnormalised probabilities, float32 [vocab]
        vocab = weights.size
        if 0 < s.top_k < vocab:
            candidates = np.argpartition(weights, vocab - s.top_k)[vocab - s.top_k :]
        else:
            candidates = np.arange(vocab)
        mass = float(weights[candidates].sum())
        if s.top_p < 1.0:
            candidates = self._nucleus(weights, candidates, s.top_p * mass)
        cumulative = np.cumsum(weights[candidates], dtype=np.float64)
        point = self._rng.random() * cumulative[-1]
        index = min(int(np.searchsorted(cumulative, point, side="right")), candidates.size - 1)
        return int(candidates[index])

    @staticmethod
    def _nucleus(weights: np.ndarray, candidates: np.ndarray, target: float) -> np.ndarray:
        """The most likely candidates, best first, whose weights reach `target` (at least one token).

        Sorting the whole vocabulary costs more than a decode step's graph overhead, and the nucleus is nearly
        always among the few most likely tokens: look at those first, widening only when they fall short.
        """
        pool = candidates
        for width in _NUCLEUS_WIDTHS:
            if width >= candidates.size:
                break
            few = candidates[np.argpartition(weights[candidates], candidates.size - width)[-width:]]
            if weights[few].sum() >= target:
                pool = few
                break
        # Stable sort, so equal weights keep a fixed order (reproducible).
        order = pool[np.argsort(-weights[pool], kind="stable")]
        before = np.cumsum(weights[order], dtype=np.float64) - weights[order]
        keep = max(1, int(np.searchsorted(before, target, side="left")))
        return order[:keep]


def sampling_from(llm: LlmSettings) -> Sampling:
    """The sampling settings of config.yaml's `llm:` section."""
    # Every Sampling field has a key of the same name in `llm:`; a new field gets its key there too.
    return Sampling(**{f.name: getattr(llm, f.name) for f in dataclasses.fields(Sampling)})
