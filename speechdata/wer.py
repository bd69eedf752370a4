"""Word error rate for transcript checks, with one tokenisation for every caller."""

from __future__ import annotations

import re

# Lower case; a word is a run of letters or digits, joined by inner apostrophes (DON'T is one word). Quotes,
# punctuation and other marks separate words and are dropped. CJK text is one "word" per unbroken run.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(1, len(ref))


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    """Every word of `needle` appears in `haystack`, in order (other words may come between)."""
    it = iter(haystack)
    return all(word in it for word in needle)
