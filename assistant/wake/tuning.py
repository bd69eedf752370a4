"""Fitting text wake words to real voices and rooms: scan recordings at many per-keyword settings, pick the best.

A keywords line carries its own `:boost` (how strongly the search favours the keyword's tokens) and `#threshold`
(the probability it must reach to fire). The right pair differs per word and per room, so `assistant keywords
tune` measures it: every candidate setting is one pass over the positives (recordings of the phrases) and the
negatives (audio where no keyword is said), and per keyword the setting with the highest recall under a
false-alarm budget wins.

One KeywordSpotter holds the model; each pass is a stream with its own keyword list (sherpa-onnx's per-stream
keywords: `create_stream(keywords=...)`), so the model is loaded once. All keywords share a pass at the same
setting, each under its own label, so a grid of S settings costs S passes whatever the number of keywords. (A
detection resets the stream, so two keywords said in the same second can mask each other; positives are single
phrases and negatives have none, so this does not bias the counts.) Alternative token sequences the converter
makes for a phrase (sandhi variants, BPE splits) all stay in the list under the phrase's label.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from assistant.audio.chunk import SAMPLE_RATE, HasSamples
from assistant.errors import ModelError
from assistant.models.files import TransducerFiles
from assistant.wake.keywords import Keyword, format_keywords, sherpa_tag
from assistant.wake.spotter import TAIL_PADDING_S

log = logging.getLogger(__name__)

BOOSTS = (1.0, 1.5, 2.0, 3.0)
THRESHOLDS = (0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)
_BASE_TAG = "__tuning_base__"  # the spotter's own keyword list: one line that never fires, filtered out


@dataclass(frozen=True)
class Setting:
    boost: float | None  # None: as written in the keywords file (or the spotter's default)
    threshold: float | None

    def label(self) -> str:
        if self.boost is None and self.threshold is None:
            return "as written"
        return f":{self.boost:g} #{self.threshold:g}"


AS_WRITTEN = Setting(None, None)


@dataclass(frozen=True)
class Hit:
    clip: str
    label: str
    t: float  # seconds into the clip at which the keyword's last token was emitted
    tokens: tuple[str, ...]
    t_first: float | None = None  # ... and its first token (None when the result carries no times)


@dataclass(frozen=True)
class Clip(HasSamples):
    name: str
    samples: np.ndarray  # float32 mono 16 kHz
    label: str | None = None  # the keyword said in it (positives); None for negatives


class Scanner:
    """One loaded KeywordSpotter; `scan` runs a keyword list over clips on fresh per-stream keyword lists."""

    def __init__(self, files: TransducerFiles, keywords: Sequence[Keyword], *, num_threads: int = 1) -> None:
        import sherpa_onnx

        self.keywords = list(keywords)
        # The spotter needs a keyword list of its own, and a stream's list is added to it: where both hold the
        # same token path, the spotter's settings win. So its one line is a path no keyword shares (a token no
        # keyword uses, repeated), at a threshold it never reaches.
        used = {token for kw in self.keywords for token in kw.tokens}
        spare = next(tok for tok in reversed(_tokens_of(files.tokens)) if tok not in used and not tok.startswith("<"))
        base = dataclasses.replace(self.keywords[0], tokens=[spare] * 8, label=_BASE_TAG, threshold=0.999, boost=0.1)
        fd, path = tempfile.mkstemp(prefix="keywords-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(format_keywords([base]))
            try:
                self._spotter = sherpa_onnx.KeywordSpotter(
                    tokens=str(files.tokens), encoder=str(files.encoder), decoder=str(files.decoder),
                    joiner=str(files.joiner), keywords_file=path, num_threads=num_threads,
                )
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"cannot load keyword spotter from {files.encoder.parent}: {exc}") from None
        finally:
            os.unlink(path)
        self.labels = {sherpa_tag(k.label): k.label for k in self.keywords}

    def keyword_text(self, setting: Setting, labels: Iterable[str] | None = None) -> str:
        """The per-stream keyword list: the chosen labels' lines at `setting` (as written when None)."""
        wanted = {kw.label for kw in self.keywords} if labels is None else set(labels)
        return self.keyword_text_per({label: setting for label in wanted})

    def keyword_text_per(self, settings: Mapping[str, Setting]) -> str:
        """The per-stream keyword list with each label at its own setting; labels not in `settings` left out."""
        chosen = []
        for kw in self.keywords:
            setting = settings.get(kw.label)
            if setting is None:
                continue
            if setting != AS_WRITTEN:
                kw = dataclasses.replace(kw, boost=setting.boost, threshold=setting.threshold)
            chosen.append(kw)
        return format_keywords(chosen).strip()

    def scan(self, clip: Clip, keyword_text: str, *, first: bool = False) -> list[Hit]:
        """Every keyword reported in `clip`; with `first`, stop decoding at the first one."""
        spotter = self._spotter
        stream = spotter.create_stream(keyword_text)
        stream.accept_waveform(SAMPLE_RATE, clip.samples)
        stream.accept_waveform(SAMPLE_RATE, np.zeros(int(TAIL_PADDING_S * SAMPLE_RATE), np.float32))
        stream.input_finished()
        hits: list[Hit] = []
        offset = 0.0  # the result's timestamps restart after each reset_stream
        while spotter.is_ready(stream):
            spotter.decode_stream(stream)
            result = spotter.keyword_spotter.get_result(stream)
            tag = result.keyword.strip()
            if not tag:
                continue
            spotter.reset_stream(stream)
            times = list(result.timestamps)
            t = offset + (times[-1] if times else 0.0)
            offset = t
            if tag != _BASE_TAG:
                first_t = round(offset - (times[-1] - times[0]), 2) if times else None
                hits.append(Hit(clip.name, self.labels.get(tag, tag), round(t, 2), tuple(result.tokens), first_t))
                if first:
                    break
        return hits


def _tokens_of(tokens_txt) -> list[str]:
    return [line.rsplit(maxsplit=1)[0] for line in tokens_txt.read_text(encoding="utf-8").splitlines() if line.strip()]


def scan_all(
    scanner: Scanner,
    clips: Sequence[Clip],
    settings: Sequence[Setting],
    *,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Setting, list[Hit]]:
    """Every clip under every setting (sherpa-onnx decodes outside the GIL, so threads share the cores)."""
    jobs = [(s, c) for s in settings for c in clips]
    texts = {s: scanner.keyword_text(s) for s in settings}
    results: dict[Setting, list[Hit]] = {s: [] for s in settings}
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (setting, _), hits in zip(jobs, pool.map(lambda job: scanner.scan(job[1], texts[job[0]]), jobs),
                                      strict=True):
            results[setting].extend(hits)
            done += 1
            if progress is not None:
                progress(done, len(jobs))
    return results


@dataclass(frozen=True)
class Score:
    setting: Setting
    found: int  # positives of this label in which it fired
    positives: int
    false_alarms: int  # firings on negatives, and on positives of other labels
    negative_hours: float
    partial: bool = False  # counting stopped once the budget was blown: false_alarms is a lower bound
    measured: bool = True  # False: the negatives were never decoded at this setting (search.py had no need)

    @property
    def recall(self) -> float:
        return self.found / self.positives if self.positives else 0.0

    @property
    def false_per_hour(self) -> float:
        return self.false_alarms / self.negative_hours if self.negative_hours > 0 else 0.0


def score(label: str, hits: list[Hit], positives: Sequence[Clip], negative_hours: float) -> Score:
    own = [c.name for c in positives if c.label == label]
    fired = {h.clip for h in hits if h.label == label}
    found = sum(1 for name in own if name in fired)
    wrong = sum(1 for h in hits if h.label == label and h.clip not in own)
    return Score(AS_WRITTEN, found, len(own), wrong, negative_hours)


@dataclass(frozen=True)
class Choice:
    label: str
    chosen: Score
    default: Score
    runner_up: Score | None  # the next looser setting, for the margin in the report


def choose(
    labels: Sequence[str],
    results: dict[Setting, list[Hit]],
    positives: Sequence[Clip],
    negative_hours: float,
    *,
    budget_per_hour: float,
) -> list[Choice]:
    """Per label: the highest recall whose false alarms stay within the budget; ties go to the stricter
    setting (higher threshold, then lower boost), which keeps the most margin against false wakes."""
    choices = []
    for label in labels:
        scored = [dataclasses.replace(score(label, hits, positives, negative_hours), setting=s)
                  for s, hits in results.items()]
        default = next(s for s in scored if s.setting == AS_WRITTEN)
        ok = [s for s in scored if s.setting != AS_WRITTEN and s.false_per_hour <= budget_per_hour]
        if not ok:
            choices.append(Choice(label, default, default, None))
            continue
        strictness = lambda s: (s.setting.threshold or 0.0, -(s.setting.boost or 0.0))  # noqa: E731
        best = max(ok, key=lambda s: (s.found, -s.false_alarms, strictness(s)))
        if best.found <= default.found and default.false_per_hour <= budget_per_hour:
            best = default  # tuning found nothing better: keep the line as the user wrote it
        looser = [s for s in scored if s.setting != AS_WRITTEN and strictness(s) < strictness(best)]
        runner = max(looser, key=strictness) if looser else None
        choices.append(Choice(label, best, default, runner))
    return choices


def wilson(found: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest for 3/3 (29-100%), unlike found/total alone."""
    if total == 0:
        return 0.0, 1.0
    p = found / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def tuned_lines(text: str, choices: Sequence[Choice], keywords: Sequence[Keyword], note: str) -> str:
    """The user's keywords file with the chosen `:boost #threshold` on each tuned line, comments kept."""
    by_line: dict[int, Setting] = {}
    chosen = {c.label: c.chosen.setting for c in choices}
    for kw in keywords:
        setting = chosen.get(kw.label)
        if setting is not None and setting != AS_WRITTEN:
            by_line[kw.line_no] = setting
    out = [f"# tuned by `assistant keywords tune`: {note}"]
    for line_no, raw in enumerate(text.splitlines(), start=1):
        setting = by_line.get(line_no)
        if setting is None:
            out.append(raw)
            continue
        kw = next(k for k in keywords if k.line_no == line_no)
        suffix = f" :{setting.boost:g} #{setting.threshold:g}"
        if kw.label != kw.phrase:
            suffix += f" @{kw.label}"
        out.append(kw.phrase + suffix)
    return "\n".join(out) + "\n"


def counts(hits: Iterable[Hit]) -> Counter[str]:
    return Counter(h.label for h in hits)
