"""training.eval --mc on every multiple-choice layout in ../shared/assets/datasets (C-Eval, CMMLU, MMLU,
ARC/OpenBookQA), folders reported per subject, chance level for random weights, and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.errors import ModelError
from training.mc import read_choices, set_name, subject_files, wilson_interval


@pytest.fixture(scope="module")
def datasets(assets: Path) -> Path:
    return assets / "datasets"


def test_each_layout_reads_its_real_file(datasets: Path) -> None:
    ceval = read_choices(datasets / "ceval" / "val" / "law_val.csv")
    assert ceval[0].layout == "C-Eval" and ceval[0].answer == "C" and ceval[0].line == 2
    cmmlu = read_choices(datasets / "cmmlu" / "dev" / "agronomy.csv")
    assert cmmlu[0].layout == "CMMLU"
    assert (cmmlu[0].question, cmmlu[0].choices, cmmlu[0].answer) == (
        "肉牛屠宰后，胴体的哪个部位肉质较好", ("胸", "腹", "大腿", "小腿"), "C"
    )
    mmlu = read_choices(datasets / "mmlu" / "dev" / "medical_genetics_dev.csv")
    assert mmlu[0].layout == "MMLU" and mmlu[0].answer == "C"  # answer 2
    assert mmlu[0].choices[2] == "Southern blotting."
    arc = read_choices(datasets / "arc-openbookqa" / "arc_challenge.jsonl")
    assert arc[0].layout == "ARC/OpenBookQA" and arc[0].answer == "C"  # gold 2
    assert arc[0].question.startswith("An astronomer")  # "Question: " dropped
    obqa = read_choices(datasets / "arc-openbookqa" / "openbook_qa.jsonl")
    assert obqa[0].answer == "B" and obqa[0].question.startswith("A person wants")


def test_whole_sets_read_with_their_published_counts(datasets: Path) -> None:
    counts = {
        "mmlu/dev": 190, "mmlu/test": 9765,  # PROVENANCE.md totals of the 38 shared subjects
        "arc-openbookqa": 1172 + 2376 + 500,
    }  # fmt: skip
    for rel, total in counts.items():
        assert sum(len(read_choices(f)) for f in subject_files(datasets / rel)) == total, rel
    for folder in ("cmmlu/dev", "cmmlu/test", "ceval/val", "ceval/dev"):
        for file in subject_files(datasets / folder):
            assert read_choices(file), file


def test_line_numbers_count_multiline_fields(datasets: Path) -> None:
    # college_computer_science_dev.csv: 5 records over 14 lines (quoted fields with newlines).
    questions = read_choices(datasets / "mmlu" / "dev" / "college_computer_science_dev.csv")
    lines = [q.line for q in questions]
    assert lines[0] == 2 and lines == sorted(lines) and lines[-1] > 6


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("odd.csv", "q,opt1,opt2,label\nx,a,b,1\n", r"odd\.csv:1: unknown multiple-choice layout, header 'q,opt1"),
        ("odd.jsonl", '{"prompt": "x", "options": ["a"]}\n', r"odd\.jsonl:1: unknown multiple-choice layout, keys"),
        ("cmmlu.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n",
         r"cmmlu\.csv:3: bad CMMLU record: answer 'E' is not one of A/B/C/D"),
        ("mmlu.csv", 'question,choice0,choice1,choice2,choice3,answer\n"two\nlines",a,b,c,d,1\nq,a,b,c,d,4\n',
         r"mmlu\.csv:4: bad MMLU record: answer '4' is not an index 0-3"),
        ("arc.jsonl", '{"query": "q", "choices": ["a", "b", "c", "d"], "gold": 1}\n\n'
         '{"query": "q", "choices": ["a", "b", "c", "d"], "gold": 7}\n',
         r"arc\.jsonl:3: bad ARC/OpenBookQA record: gold 7 is not an index 0-3"),
        ("ceval.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,\n", r"ceval\.csv:2: bad C-Eval record: answer ''"),
        ("short.csv", "id,question,A,B,C,D,answer\n0,q,a,b\n", r"short\.csv:2: 4 fields, the C-Eval header has 7"),
    ],
)  # fmt: skip
def test_errors_name_file_and_line(tmp_path: Path, name: str, text: str, match: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=match):
        read_choices(tmp_path / name)


def test_set_names_and_interval(datasets: Path) -> None:
    assert set_name(datasets / "cmmlu" / "dev") == "cmmlu/dev"
    assert set_name(datasets / "arc-openbookqa" / "arc_easy.jsonl") == "arc-openbookqa/arc_easy"
    lo, hi = wilson_interval(30, 120)
    assert lo < 0.25 < hi and hi - lo < 0.17


def test_random_weights_score_chance_per_subject_and_overall(reference: Path, datasets: Path, tmp_path, capsys):
    from training.eval import main

    weights = reference / "minimind2" / "minimind2-dense-tiny-random.pth"
    tokenizer = datasets.parent / "minimind-tokenizer" / "minimind2"
    argv = [str(weights), "--tokenizer", str(tokenizer), "--mc", str(datasets / "arc-openbookqa"),
            "--mc", str(datasets / "cmmlu" / "dev" / "agronomy.csv"), "--mc-limit", "40"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    folder = result[f"mc:{datasets / 'arc-openbookqa'}"]
    assert folder["questions"] == 120 and folder["chance"] == 0.25
    assert set(folder["subjects"]) == {"arc_challenge", "arc_easy", "openbook_qa"}
    lo, hi = folder["ci95"]
    assert lo <= 0.25 <= hi  # random weights: chance level, within its 95% interval
    accs = [s["accuracy"] for s in folder["subjects"].values()]
    assert folder["mean_over_subjects"] == pytest.approx(sum(accs) / 3, abs=1e-4)
    assert isinstance(result[f"mc:{datasets / 'cmmlu' / 'dev' / 'agronomy.csv'}"], float)  # a file: its accuracy
    table = captured.err
    assert "| model | params | arc-openbookqa | cmmlu/dev/agronomy |" in table
    assert "| mean over subjects | 3 |" in table and "| overall (95% CI) | 120 |" in table
    assert "| chance | | 25.00 |" in table


def test_unknown_layout_is_exit_4(tmp_path: Path, reference: Path, datasets: Path, capsys) -> None:
    from training.eval import main

    (tmp_path / "odd.csv").write_text("q,opt1,opt2,label\nx,a,b,1\n", encoding="utf-8")
    weights = reference / "minimind2" / "minimind2-dense-tiny-random.pth"
    tokenizer = datasets.parent / "minimind-tokenizer" / "minimind2"
    assert main([str(weights), "--tokenizer", str(tokenizer), "--mc", str(tmp_path)]) == 4
    assert "odd.csv:1: unknown multiple-choice layout" in capsys.readouterr().err


def test_torch_and_fp32_onnx_pick_the_same_letters(tiny_dirs, reference: Path, datasets: Path) -> None:  # noqa: F811
    pytest.importorskip("torch")
    from training.data import load_tokenizer
    from training.eval import OnnxLM, TorchLM, choice_results

    tokenizer = load_tokenizer(datasets.parent / "minimind-tokenizer" / "minimind2")
    questions = []
    for path in ("mmlu/dev/anatomy_dev.csv", "cmmlu/dev/arts.csv", "arc-openbookqa/openbook_qa.jsonl"):
        questions += read_choices(datasets / path)[:4]
    torch_lm = TorchLM(reference / "minimind2" / "minimind2-dense-tiny-random.pth")
    onnx_lm = OnnxLM(tiny_dirs["fp32"])
    assert choice_results(torch_lm, questions, tokenizer) == choice_results(onnx_lm, questions, tokenizer)


