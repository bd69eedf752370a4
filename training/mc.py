"""Multiple-choice sets in the layouts found in ../shared/assets/datasets, read into one Question type, and the
summary of a folder of them (per subject, mean over subjects, overall with a 95% confidence interval).

Layouts, told apart by the CSV header or the first jsonl record's keys:
- C-Eval   CSV `id,question,A,B,C,D,answer[,explanation]` (or jsonl with those keys), answer a letter (or 0-3);
- CMMLU    CSV `,Question,A,B,C,D,Answer` (an unnamed index column first), answer a letter;
- MMLU     CSV `question,choice0,choice1,choice2,choice3,answer`, answer the index 0-3;
- ARC / OpenBookQA  jsonl `{"query", "choices": [...], "gold": index}` (MosaicML's form; ARC queries start
  with "Question: ", which is dropped because the prompt lists the question itself).
Anything else is a ModelError naming the file, the line and what was found; so is a bad answer on line N.
Line numbers are the file's own (a quoted CSV field may span lines; a record is named by its first line).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError
from training.data import JsonlFile

LETTERS = "ABCDEFGH"
CEVAL = ("question", "A", "B", "C", "D", "answer")
CMMLU = ("Question", "A", "B", "C", "D", "Answer")
MMLU = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
MOSAIC = ("query", "choices", "gold")
KNOWN = (
    "C-Eval (id,question,A,B,C,D,answer), CMMLU (,Question,A,B,C,D,Answer), MMLU (question,choice0..choice3,answer "
    "as 0-3), ARC/OpenBookQA jsonl (query, choices, gold)"
)
CHINESE = ("C-Eval", "CMMLU")  # layouts whose prompt ends in 答案：; the others in Answer:


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: str  # a letter: A, B, ...
    layout: str = "C-Eval"  # which layout it was read from (its prompt language follows)
    line: int = 0  # first line of its record in the file


def read_choices(path: str | Path) -> list[Question]:
    """The questions of one file, in any known layout."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"multiple-choice file not found: {path}")
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise ModelError(f"{path}: a multiple-choice set is a .csv or .jsonl file; known layouts: {KNOWN}")


def subject_files(path: str | Path) -> list[Path]:
    """`path` itself, or every .csv / .jsonl under a folder (sorted; each file is one subject)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".csv", ".jsonl") and p.is_file())
        if not files:
            raise ModelError(f"{path}: no .csv or .jsonl multiple-choice files in this folder")
        return files
    return [path]


def subject_name(path: Path, root: Path) -> str:
    """The subject of a file: its path under the folder without the split suffix (law_val.csv -> law)."""
    rel = path.relative_to(root) if path != root else Path(path.name)
    stem = rel.with_suffix("").as_posix()
    for suffix in ("_val", "_dev", "_test"):
        stem = stem.removesuffix(suffix)
    return stem


def set_name(path: Path) -> str:
    """A column name for a set: cmmlu/dev rather than dev, arc-openbookqa/arc_easy rather than arc_easy.jsonl."""
    parts = [*path.parent.parts, path.stem if path.is_file() else path.name]
    keep = 2 if path.is_file() else 1  # a file with its folder
    if len(parts) > keep and parts[-keep] in ("dev", "val", "test"):
        keep += 1  # and the benchmark above a split folder
    return "/".join(parts[-keep:])


def _read_csv(path: Path) -> list[Question]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ModelError(f"{path}: empty file; known multiple-choice layouts: {KNOWN}")
        header = [h.strip().lstrip("\ufeff") for h in header]
        layout, columns = _csv_layout(header, path)
        index = {name: header.index(name) for name in columns}
        out = []
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise ModelError(f"{path}:{line}: {len(row)} fields, the {layout} header has {len(header)}")
            values = {name: row[i] for name, i in index.items()}
            out.append(_question(values, layout, path, line))
    return out


def _csv_layout(header: list[str], path: Path) -> tuple[str, tuple[str, ...]]:
    for layout, columns in (("MMLU", MMLU), ("C-Eval", CEVAL), ("CMMLU", CMMLU)):
        if all(c in header for c in columns):
            return layout, columns
    raise ModelError(f"{path}:1: unknown multiple-choice layout, header {','.join(header)!r}; known layouts: {KNOWN}")


def _read_jsonl(path: Path) -> list[Question]:
    file = JsonlFile(path)
    first = file.read(0) or {}
    if all(k in first for k in MOSAIC):
        layout = "ARC/OpenBookQA"
    elif all(k in first for k in CEVAL):
        layout = "C-Eval"
    else:
        raise ModelError(
            f"{path}:{file.line_number(0)}: unknown multiple-choice layout, keys {sorted(first)}; "
            f"known layouts: {KNOWN}"
        )
    out = []
    for i in range(len(file)):
        record = file.read(i)
        out.append(_question(record or {}, layout, path, file.line_number(i)))
    return out


def _question(values: dict, layout: str, path: Path, line: int) -> Question:
    """One record of `layout` as a Question; a missing field or a bad answer names the file and line."""
    try:
        if layout == "ARC/OpenBookQA":
            choices = tuple(str(c) for c in values["choices"])
            question = str(values["query"]).removeprefix("Question: ")
            answer = _index(values["gold"], len(choices), "gold")
        elif layout == "MMLU":
            choices = tuple(str(values[f"choice{i}"]) for i in range(4))
            question = str(values["question"])
            answer = _index(values["answer"], 4, "answer")
        else:  # C-Eval and CMMLU: letters (C-Eval files converted to 0-3 exist too)
            key = "Question" if layout == "CMMLU" else "question"
            choices = tuple(str(values[k]) for k in "ABCD")
            question = str(values[key])
            raw = str(values["Answer" if layout == "CMMLU" else "answer"]).strip()
            answer = _index(raw, 4, "answer") if raw.isdigit() else raw.upper()
            if answer not in tuple(LETTERS[:4]):  # a tuple: "" and "AB" are substrings of "ABCD"
                raise ValueError(f"answer {raw!r} is not one of A/B/C/D")
        if len(choices) < 2 or len(choices) > len(LETTERS):
            raise ValueError(f"{len(choices)} choices (2 to {len(LETTERS)} are read)")
    except KeyError as exc:
        raise ModelError(f"{path}:{line}: {layout} record without {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}:{line}: bad {layout} record: {exc}") from exc
    return Question(question, choices, answer, layout, line)


def _index(value, count: int, name: str) -> str:
    """A 0-based index as its letter; anything else (text, out of range, a bool) is a ValueError."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) >= count:
        raise ValueError(f"{name} {value!r} is not an index 0-{count - 1}")
    return LETTERS[int(text)]


def wilson_interval(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy of right/n (sane at small n and near 0 or 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class SetSummary:
    """Scores of one --mc argument (a file or a folder of subject files)."""

    subjects: dict[str, tuple[int, int]]  # subject -> (right, questions)
    chance: float  # expected accuracy of a uniform guess (mean of 1 / choices)

    @property
    def right(self) -> int:
        return sum(r for r, _ in self.subjects.values())

    @property
    def questions(self) -> int:
        return sum(n for _, n in self.subjects.values())

    @property
    def overall(self) -> float:
        return self.right / self.questions if self.questions else float("nan")

    @property
    def mean_over_subjects(self) -> float:
        accs = [r / n for r, n in self.subjects.values() if n]
        return sum(accs) / len(accs) if accs else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.right, self.questions)

    def to_dict(self) -> dict:
        lo, hi = self.ci95
        return {
            "overall": round(self.overall, 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "mean_over_subjects": round(self.mean_over_subjects, 4),
            "questions": self.questions,
            "chance": round(self.chance, 4),
            "subjects": {s: {"accuracy": round(r / n, 4), "questions": n} for s, (r, n) in self.subjects.items()},
        }


def markdown_tables(model: str, params: str, sets: dict[str, SetSummary]) -> str:
    """MiniMind README's shape (one row per model, one column per benchmark, accuracy in %), then a table of
    subjects for every set with more than one."""
    names = list(sets)
    lines = [
        "| model | params | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
        f"| {model} | {params} | " + " | ".join(f"{100 * s.overall:.2f}" for s in sets.values()) + " |",
    ]
    for name, s in sets.items():
        if len(s.subjects) < 2:
            continue
        lo, hi = s.ci95
        lines += ["", f"{name}: {len(s.subjects)} subjects, {s.questions} questions", "",
                  "| subject | questions | accuracy % |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {subj} | {n} | {100 * r / n:.2f} |" for subj, (r, n) in s.subjects.items()]
        lines.append(f"| mean over subjects | {len(s.subjects)} | {100 * s.mean_over_subjects:.2f} |")
        lines.append(
            f"| overall (95% CI) | {s.questions} | {100 * s.overall:.2f} ({100 * lo:.1f}-{100 * hi:.1f}) |"
        )
        lines.append(f"| chance | | {100 * s.chance:.2f} |")
    return "\n".join(lines)
