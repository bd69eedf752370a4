"""The tuning search that does not decode every setting over every recording.

The full grid (tuning.scan_all + tuning.choose) decodes positives and negatives once per setting: 29 passes over
an hour of negatives is ~45 min of CPU on a Pi-class core. Two facts of sherpa-onnx's keyword decoder make most
of that unnecessary:

- **A threshold only gates the report.** The beam search does not look at `#threshold`; it is compared with the
  keyword's mean token probability when a path completes. So, until the first report, decoding at a lower
  threshold is the same decoding, and "fires at least once in this clip" is monotone in the threshold for a
  one-keyword stream. Per positive clip and boost, a binary search finds the strictest threshold that still
  fires: 3 decodes for 7 thresholds instead of 7, each stopping at the first report.
  (sherpa-onnx 2.0.1 does not return the probability itself, or one decode would serve every threshold.)
- **Negatives only have to rule settings out.** The positives give each keyword's recall at every setting, so
  its candidates can be ranked before any negative is decoded (highest recall first, then the stricter
  setting). Each keyword then needs the negatives decoded at one candidate after another until one stays within
  the false-alarm budget, and a candidate is dropped the moment its count passes the budget. Every keyword sits
  in the same stream at its own current candidate (per-stream keyword lists: the model is loaded once), so one
  pass over the negatives serves all of them, and a dropped candidate's keyword restarts at its next candidate
  on the next segment while the others carry on. The negatives are cut into overlapping segments so a drop
  takes effect within seconds of audio and two threads share the work. A dropped (boost, threshold) also rules
  out the looser thresholds at that boost without decoding them (they fire wherever it fired, see above).

The result is the full grid's choice (highest recall within the budget, ties to the stricter setting) at about
one pass over the negatives instead of one per setting; tests/test_keywords_search.py checks the two agree.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from assistant.audio.chunk import SAMPLE_RATE
from assistant.wake.tuning import AS_WRITTEN, Choice, Clip, Hit, Scanner, Score, Setting

log = logging.getLogger(__name__)

SEGMENT_S = 30.0  # negatives are decoded in pieces this long: a blown candidate stops within one piece
OVERLAP_S = 2.0  # each piece starts this much early, so a keyword across a cut is still heard whole

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class Segment:
    clip: Clip
    owned_from: float  # hits before this time belong to the previous piece (the overlap)
    exclude: str | None  # a positive's own label, for which it is not a false alarm
    hours: float  # hours of negatives it adds (0 for positives of other labels)


def segments(negatives: Sequence[Clip], positives: Sequence[Clip], *, seconds: float = SEGMENT_S,
             overlap: float = OVERLAP_S) -> list[Segment]:
    """Negatives cut into overlapping pieces, then every positive (a false alarm for the other labels)."""
    out = []
    step, lead = int(seconds * SAMPLE_RATE), int(overlap * SAMPLE_RATE)
    for clip in negatives:
        n = len(clip.samples)
        for start in range(0, n, step):
            begin = max(0, start - lead)
            piece = Clip(f"{clip.name}@{start / SAMPLE_RATE:g}", clip.samples[begin:start + step])
            owned = min(step, n - start) / SAMPLE_RATE / 3600
            out.append(Segment(piece, (start - begin) / SAMPLE_RATE, None, owned))
    out.extend(Segment(c, 0.0, c.label, 0.0) for c in positives)
    return out


def strictness(setting: Setting) -> tuple[float, float]:
    return (setting.threshold or 0.0, -(setting.boost or 0.0))


def recall_grid(scanner: Scanner, positives: Sequence[Clip], boosts: Sequence[float], thresholds: Sequence[float],
                *, workers: int = 2, progress: Progress | None = None) -> dict[str, dict[Setting, int]]:
    """Per label and setting (and as written): how many of the label's positives it fires on."""
    ordered = sorted(set(thresholds), reverse=True)  # strict to loose: fires on a suffix of this list
    labels = list(dict.fromkeys(kw.label for kw in scanner.keywords))
    found: dict[str, dict[Setting, int]] = {
        label: {AS_WRITTEN: 0} | {Setting(b, t): 0 for b in boosts for t in ordered} for label in labels
    }

    def fires(clip: Clip, setting: Setting) -> bool:
        text = scanner.keyword_text(setting, [clip.label])
        return any(h.label == clip.label for h in scanner.scan(clip, text, first=True))

    def job(item: tuple[Clip, float | None]) -> list[Setting]:
        clip, boost = item
        if boost is None:
            return [AS_WRITTEN] if fires(clip, AS_WRITTEN) else []
        low, high = 0, len(ordered)  # the first index that fires lies in [low, high]; high = none fires
        while low < high:
            mid = (low + high) // 2
            if fires(clip, Setting(boost, ordered[mid])):
                high = mid
            else:
                low = mid + 1
        return [Setting(boost, t) for t in ordered[low:]]

    items = [(c, b) for c in positives if c.label in found for b in (None, *boosts)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, ((clip, _), fired) in enumerate(zip(items, pool.map(job, items), strict=True), start=1):
            for setting in fired:
                found[clip.label][setting] += 1
            if progress is not None:
                progress("positives", done, len(items))
    return found


def candidates(found: dict[Setting, int]) -> list[Setting]:
    """A label's settings in the order tuning.choose prefers them: more recall, then stricter; the line as
    written before any grid setting that does not find more than it."""
    grid = sorted((s for s in found if s != AS_WRITTEN), key=lambda s: (-found[s], tuple(-v for v in strictness(s))))
    default = found[AS_WRITTEN]
    return [s for s in grid if found[s] > default] + [AS_WRITTEN] + [s for s in grid if found[s] <= default]


@dataclass
class _Track:
    """One label's walk down its candidates over the negative segments."""

    order: list[Setting]
    needed: set[int]
    index: int = 0
    verified: set[int] = field(default_factory=set)
    pending: set[tuple[int, int]] = field(default_factory=set)
    alarms: int = 0
    hours: float = 0.0
    done: bool = False
    chosen: Setting | None = None
    dropped: list[tuple[Setting, int, float]] = field(default_factory=list)  # (setting, alarms, hours scanned)

    @property
    def current(self) -> Setting:
        return self.order[self.index]

    def _implied(self, setting: Setting) -> bool:
        return setting != AS_WRITTEN and any(
            d != AS_WRITTEN and d.boost == setting.boost and (setting.threshold or 0) <= (d.threshold or 0)
            for d, _, _ in self.dropped)

    def next_candidate(self) -> None:
        blown = self.current
        self.dropped.append((blown, self.alarms, self.hours))
        self.index += 1
        # A looser threshold at the same boost fires wherever a dropped one did: drop it unseen.
        while self.index < len(self.order) and self._implied(self.current):
            self.index += 1
        self.verified, self.alarms, self.hours = set(), 0, 0.0
        if self.index >= len(self.order):
            self.done = True  # nothing stays within the budget: the line stays as written
        elif not self.needed:
            self.done, self.chosen = True, self.current


def search(
    scanner: Scanner,
    positives: Sequence[Clip],
    negatives: Sequence[Clip],
    boosts: Sequence[float],
    thresholds: Sequence[float],
    *,
    budget_per_hour: float,
    workers: int = 2,
    progress: Progress | None = None,
    segment_s: float = SEGMENT_S,
) -> list[Choice]:
    """Per label: the highest recall whose false alarms stay within the budget (see the module docstring)."""
    found = recall_grid(scanner, positives, boosts, thresholds, workers=workers, progress=progress)
    segs = segments(negatives, positives, seconds=segment_s)
    hours = sum(s.hours for s in segs)
    allowed = math.floor(budget_per_hour * hours + 1e-9)
    tracks = {label: _Track(candidates(counts), {i for i, s in enumerate(segs) if s.exclude != label})
              for label, counts in found.items()}
    for track in tracks.values():
        if not track.needed:
            track.done, track.chosen = True, track.current
    inflight: dict[Future, tuple[int, dict[str, int]]] = {}
    cursor, decoded = 0, 0.0

    def next_job() -> tuple[int, dict[str, int]] | None:
        nonlocal cursor
        for step in range(len(segs)):
            i = (cursor + step) % len(segs)
            wanted = {label: t.index for label, t in tracks.items()
                      if not t.done and i in t.needed and i not in t.verified and (i, t.index) not in t.pending}
            if wanted:
                cursor = i + 1
                for label, index in wanted.items():
                    tracks[label].pending.add((i, index))
                return i, wanted
        return None

    def scan(i: int, wanted: dict[str, int]) -> list[Hit]:
        text = scanner.keyword_text_per({label: tracks[label].order[index] for label, index in wanted.items()})
        return scanner.scan(segs[i].clip, text)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while True:
            while len(inflight) < max(1, workers) and (job := next_job()) is not None:
                inflight[pool.submit(scan, *job)] = job
            if not inflight:
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                i, wanted = inflight.pop(future)
                hits = future.result()
                decoded += segs[i].clip.seconds
                for label, index in wanted.items():
                    track = tracks[label]
                    track.pending.discard((i, index))
                    if track.done or track.index != index:
                        continue  # this label moved on while the piece was being decoded
                    track.verified.add(i)
                    track.hours += segs[i].hours
                    track.alarms += sum(1 for h in hits if h.label == label and h.t >= segs[i].owned_from)
                    if track.alarms > allowed:
                        log.debug("%s: %s dropped after %d false alarms in %.1f min", label,
                                  track.current.label(), track.alarms, track.hours * 60)
                        track.next_candidate()
                    elif track.verified >= track.needed:
                        track.done, track.chosen = True, track.current
            if progress is not None:
                settled = sum(len(t.needed) if t.done else len(t.verified) for t in tracks.values())
                progress("negatives", settled, sum(len(t.needed) for t in tracks.values()))
    log.info("search: %.1f min of negatives and other labels' positives, %.1f min decoded for %d labels",
             hours * 60, decoded / 60, len(tracks))
    own = Counter(c.label for c in positives)
    return [_choice(label, tracks[label], found[label], own[label], hours) for label in tracks]


def _choice(label: str, track: _Track, found: dict[Setting, int], positives: int, hours: float) -> Choice:
    dropped = {setting: (alarms, seen or hours) for setting, alarms, seen in track.dropped}
    if track.chosen is not None:
        chosen = Score(track.chosen, found[track.chosen], positives, track.alarms, hours)
    else:  # nothing stays within the budget: the line stays as written
        alarms, seen = dropped.get(AS_WRITTEN, (0, hours))
        chosen = Score(AS_WRITTEN, found[AS_WRITTEN], positives, alarms, seen, partial=True,
                       measured=AS_WRITTEN in dropped)
    if chosen.setting == AS_WRITTEN:
        default = chosen
    elif AS_WRITTEN in dropped:
        alarms, seen = dropped[AS_WRITTEN]
        default = Score(AS_WRITTEN, found[AS_WRITTEN], positives, alarms, seen, partial=True)
    else:  # never needed on the negatives: a better setting passed first
        default = Score(AS_WRITTEN, found[AS_WRITTEN], positives, 0, hours, measured=False)
    runner = None
    if track.dropped:  # the last setting ruled out: the nearest one with more recall (or looser) that failed
        setting, alarms, seen = track.dropped[-1]
        runner = Score(setting, found[setting], positives, alarms, seen or hours, partial=True)
    return Choice(label, chosen, default, runner)
