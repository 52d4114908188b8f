"""``pdfnet evaluate`` over several methods and splits: the comparison table (Markdown, CSV, LaTeX, figures),
its reuse of finished scores, and its one-line errors; test.py's published numbers."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_toy_dis5k
from test_metrics import synthetic_pair

from pdfnet.errors import EvaluationError
from pdfnet.evaluation import folders
from pdfnet.evaluation.folders import evaluate_predictions
from pdfnet.evaluation.table import Method, evaluate_table, latex, markdown, parse_method, plan_jobs

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("DIS-VD", "DIS-TE1")
METHODS = ("good", "fair", "poor_one")


@pytest.fixture
def layout(tmp_path):
    """Masks in gt/<split>/ and three methods' predictions in runs/<method>/<split>/: the better the method, the
    less its predictions are blurred and shifted."""
    for s, split in enumerate(SPLITS):
        (tmp_path / "gt" / split).mkdir(parents=True)
        for i in range(3):
            _, gt = synthetic_pair(10 * s + i, 72, 96)
            cv2.imwrite(str(tmp_path / "gt" / split / f"{split}_{i}.png"), gt)
            for quality, method in enumerate(METHODS):
                folder = tmp_path / "runs" / method / split
                folder.mkdir(parents=True, exist_ok=True)
                pred = cv2.GaussianBlur(np.roll(gt, 2 * quality, axis=1).astype(np.float32), (0, 0), 1 + 3 * quality)
                cv2.imwrite(str(folder / f"{split}_{i}.png"), pred.astype(np.uint8))
    return tmp_path


def _run(*args, cwd):
    command = [sys.executable, "-m", "pdfnet", "evaluate", "--workers", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_three_methods_over_two_splits(layout):
    preds = [a for m in METHODS for a in ("--pred", f"{m}=runs/{m}/{{split}}")]
    result = _run(*preds, "--gt", "gt/{split}", "--splits", *SPLITS, "--out", "table", "--cache-dir", "c", cwd=layout)
    assert result.returncode == 0, result.stderr
    out = layout / "table"
    summaries = json.loads((out / "metrics.json").read_text())
    for method in METHODS:  # each cell is what scoring that folder alone gives
        for split in SPLITS:
            alone, _ = evaluate_predictions(
                layout / "runs" / method / split, layout / "gt" / split, 1, None, progress=False
            )
            assert summaries[method][split] == pytest.approx(alone, rel=1e-9), (method, split)  # OpenCV's last bits
    # results.csv: one row per (method, split), every metric at full precision
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["split"]) for r in rows] == [(m, s) for m in METHODS for s in SPLITS]
    assert float(rows[0]["maxBIoU"]) == pytest.approx(summaries["good"]["DIS-VD"]["maxBIoU"], abs=1e-6)
    assert {"maxFm_pr", "meanBIoU", "HCE", "n"} <= set(rows[0])
    # results.md: a table per split, the best of each column in bold (lower is better for MAE and HCE)
    md = (out / "results.md").read_text()
    assert md in result.stdout
    for split in SPLITS:
        section = md.split(f"### {split}")[1].split("###")[0]
        lines = [line for line in section.splitlines() if line.startswith("| ")]
        assert lines[0] == "| method | maxFm | wFm | MAE | Sm | meanEm | HCE | maxBIoU | meanBIoU | n |"
        cells = {line.split(" | ")[0][2:]: line.split(" | ")[1:-1] for line in lines[1:]}
        assert list(cells) == list(METHODS)
        for column, key in enumerate(("maxFm", "wFm", "MAE", "Sm", "meanEm", "HCE", "maxBIoU", "meanBIoU")):
            values = {m: summaries[m][split][key] for m in METHODS}
            best = (min if key in ("MAE", "HCE") else max)(values, key=values.get)
            assert cells[best][column].startswith("**"), (split, key)
            assert not any(
                cells[m][column].startswith("**") for m in METHODS if cells[m][column] != cells[best][column]
            )
    # results.tex: booktabs, a block per split, best in \textbf, the name's underscore escaped
    tex = (out / "results.tex").read_text()
    assert tex.count("\\toprule") == 1 and tex.count("\\bottomrule") == 1 and tex.count("\\midrule") == 2
    assert "poor\\_one &" in tex and "\\textit{DIS-TE1}" in tex and tex.count("\\textbf{") == md.count("**") // 2
    # a precision-recall figure per split, with every method's curve
    for split in SPLITS:
        image = cv2.imread(str(out / f"pr_{split}.png"))
        assert image is not None and image.shape[0] > 300 and image.shape[1] > 600
    assert "Traceback" not in result.stderr


def test_rerun_scores_only_what_changed(layout, monkeypatch):
    methods = [Method(m, str(layout / "runs" / m / "{split}")) for m in METHODS[:2]]
    gt = str(layout / "gt" / "{split}")
    first, errors = evaluate_table(methods, gt, layout / "t", list(SPLITS), 1, None, progress=False, plot=False)
    assert errors == []
    scored = []
    original = folders.evaluate_predictions

    def counting(pred, *args, **kwargs):
        scored.append(Path(pred).relative_to(layout / "runs").as_posix())
        return original(pred, *args, **kwargs)

    monkeypatch.setattr(folders, "evaluate_predictions", counting)
    again, _ = evaluate_table(methods, gt, layout / "t", list(SPLITS), 1, None, progress=False, plot=False)
    assert scored == [] and again == first
    # a replaced prediction: only that (method, split) is scored again; a new method: only its splits
    path = layout / "runs" / "fair" / "DIS-TE1" / "DIS-TE1_0.png"
    cv2.imwrite(str(path), np.zeros((72, 96), np.uint8))
    methods.append(Method("poor_one", str(layout / "runs" / "poor_one" / "{split}")))
    third, _ = evaluate_table(methods, gt, layout / "t", list(SPLITS), 1, None, progress=False, plot=False)
    assert scored == ["fair/DIS-TE1", "poor_one/DIS-VD", "poor_one/DIS-TE1"]
    assert third["fair"]["DIS-TE1"]["maxFm"] < first["fair"]["DIS-TE1"]["maxFm"]
    assert third["good"] == first["good"]
    evaluate_table(methods, gt, layout / "t", list(SPLITS), 1, None, rescore=True, progress=False, plot=False)
    assert len(scored) == 3 + 6


def test_one_failing_method_does_not_lose_the_others(layout):
    (layout / "runs" / "fair" / "DIS-VD" / "DIS-VD_1.png").write_bytes(b"broken")
    preds = [a for m in METHODS for a in ("--pred", f"{m}=runs/{m}/{{split}}")]
    result = _run(*preds, "--gt", "gt/{split}", "--splits", *SPLITS, "--out", "t", "--no-cache", cwd=layout)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fair on DIS-VD" in errors[0] and "DIS-VD_1.png" in errors[0]
    table = json.loads((layout / "t" / "metrics.json").read_text())
    assert list(table["fair"]) == ["DIS-TE1"] and list(table["good"]) == list(SPLITS)
    assert "Not scored" in (layout / "t" / "results.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pred", "a=runs/good/{split}", "--pred", "b=runs/nowhere/{split}"], "no folder for 2 of the inputs: b/"),
        (["--pred", "a=runs/good/{split}", "--pred", "a=runs/fair/{split}"], "method name 'a' is given twice"),
        (["--pred", "a=runs/good/DIS-VD", "--pred", "b=runs/fair/{split}"], "--pred a=runs/good/DIS-VD has no {split}"),
        (["--pred", "a/b=runs/good/{split}", "--pred", "c=runs/x/{split}"], "no folder"),  # a/b=... is a path
        (["--pred", ".hidden=runs/good/{split}"], "'.hidden' cannot name a method"),
        (["--pred", "a=runs/good/{split}", "--out", "t.json"], "several methods write a folder"),
    ],
)
def test_mistakes_are_one_line(layout, args, message):
    out = [] if "--out" in args else ["--out", "t"]
    result = _run(*args, "--gt", "gt/{split}", "--splits", *SPLITS, *out, cwd=layout)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert not (layout / "t" / "results.md").exists()  # refused before any scoring


def test_split_template_needs_splits(layout):
    preds = ["--pred", "a=runs/good/{split}", "--pred", "b=runs/fair/{split}"]
    result = _run(*preds, "--gt", "gt/{split}", "--out", "t", cwd=layout)
    assert result.returncode == 1 and "{split} in --pred or --gt needs --splits" in result.stderr


def test_parse_method():
    assert parse_method("PDFNet=runs/a/{split}") == Method("PDFNet", "runs/a/{split}")
    assert parse_method("runs/birefnet/{split}") == Method("birefnet", "runs/birefnet/{split}")
    assert parse_method("runs/lr=0.1/{split}") == Method("lr=0.1", "runs/lr=0.1/{split}")
    with pytest.raises(EvaluationError, match="no folder after"):
        parse_method("name=")


def test_data_root_and_te_mean(tmp_path):
    """--gt without {split}: a data root, each split's masks found by its layout; DIS-TE1..4 add TE-mean."""
    splits = ["DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"]
    root = make_toy_dis5k(tmp_path / "data", splits=splits, n=2, layout=("im", "gt"))
    for split in splits:
        folder = tmp_path / "runs" / "m" / split
        folder.mkdir(parents=True)
        for mask in (root / split / "gt").iterdir():
            pred = cv2.GaussianBlur(cv2.imread(str(mask), 0), (0, 0), 2)
            cv2.imwrite(str(folder / mask.name), pred)
    jobs = plan_jobs([Method("m", str(tmp_path / "runs" / "m" / "{split}"))], str(root), splits)
    assert [j.gt for j in jobs] == [root / s / "gt" for s in splits]
    method = Method("m", str(tmp_path / "runs" / "m" / "{split}"))
    table, _ = evaluate_table([method], str(root), tmp_path / "t", splits, 1, None, progress=False)
    assert list(table["m"]) == splits + ["TE-mean"]
    assert table["m"]["TE-mean"]["maxFm"] == pytest.approx(np.mean([table["m"][s]["maxFm"] for s in splits]))
    assert table["m"]["TE-mean"]["n"] == 8
    assert "### TE-mean" in (tmp_path / "t" / "results.md").read_text()
    assert not (tmp_path / "t" / "pr_TE-mean.png").exists() and (tmp_path / "t" / "pr_DIS-TE4.png").exists()


def test_ties_are_all_bold_and_latex_prints_as_papers_do():
    row = {"maxFm": 0.9123, "wFm": 0.8, "MAE": 0.0304, "Sm": 0.9, "meanEm": 0.9, "HCE": 1040.4}
    row |= {"maxBIoU": 0.7, "meanBIoU": 0.5, "n": 10}
    tied = dict(row, maxFm=0.91249, MAE=0.0296, HCE=1100.0)  # maxFm .912 and MAE .030 as printed: ties
    table = {"A & B": {"DIS-VD": row}, "C": {"DIS-VD": tied}}
    md = markdown(table)
    assert "| A & B | **0.912** | **0.800** | **0.030** |" in md and "| C | **0.912** | **0.800** | **0.030** |" in md
    assert "**1040** |" in md and "| 1100 |" in md  # fewer corrections are better
    tex = latex(table)
    assert "A \\& B & \\textbf{.912} & \\textbf{.800} & \\textbf{.030} & \\textbf{.900} & \\textbf{.900} & " in tex
    assert "\\textbf{1040}" in tex and "& 1100 &" in tex


def test_published_numbers_under_test_py_rows():
    from pdfnet.evaluation.testing import markdown_table

    keys = ("maxFm", "maxFm_pr", "wFm", "MAE", "Sm", "meanEm", "HCE")
    ours = {"DIS-TE1": dict(zip(keys, (0.9, 0.912, 0.85, 0.033, 0.9, 0.93, 120.0)), n=500)}
    ours["ECSSD"] = dict(ours["DIS-TE1"], n=1000)  # a split the paper did not score: no published rows
    md = markdown_table(ours, checkpoint="best.pt", tta=True, variant="release")
    # the paper's maxF .909 is maxFm_pr (its code's), E .927 meanEm; the difference is this run's minus the paper's
    assert "| DIS-TE1, arXiv v1 |  | 0.909 | 0.846 | 0.031 | 0.899 | 0.927 |  | |" in md
    assert "| DIS-TE1, this run - arXiv v1 |  | +0.003 | +0.004 | +0.002 | +0.001 | +0.003 |  | |" in md
    assert "ECSSD, arXiv" not in md and "arXiv 2503.06100v1 (March 2025)" in md and "maxFm_pr" in md
    assert "CVPR 2026" not in md  # it published no DIS-TE1 numbers
    ours = {"DIS-VD": ours["DIS-TE1"]}
    md = markdown_table(ours, checkpoint="best.pt", tta=True, variant="release")
    assert "| DIS-VD, CVPR 2026 |  | 0.915 |  |  |  |  |  | |" in md
    assert "| DIS-VD, this run - CVPR 2026 |  | -0.003 |  |  |  |  |  | |" in md
