"""Scoring folders (metric_tools/evaluate.py) and predicting + scoring DIS splits (test.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_toy_dis5k
from PIL import Image
from test_metrics import stock_summary, synthetic_pair

import pdfnet.evaluation.metrics as metrics
from pdfnet.errors import EvaluationError
from pdfnet.evaluation.folders import METRIC_KEYS, evaluate_predictions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pairs = [synthetic_pair(seed, 96, 128) for seed in range(4)]
    for i, (pred, gt) in enumerate(pairs):
        cv2.imwrite(str(pred_dir / f"img{i}.png"), pred)
        cv2.imwrite(str(gt_dir / f"img{i}.png"), gt)
    return pred_dir, gt_dir, pairs


def test_cli_writes_json_csv_and_plot(folders, tmp_path):
    pred_dir, gt_dir, pairs = folders
    out = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "metric_tools" / "evaluate.py"), "--pred", str(pred_dir), "--gt", str(gt_dir)]
    result = subprocess.run(
        command + ["--out", str(out), "--workers", "2", "--cache-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert tuple(summary) == METRIC_KEYS and summary["n"] == 4
    expected = stock_summary(pairs)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-9), key
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("name,maxFm") and len(rows) == 5
    assert out.with_suffix(".png").stat().st_size > 1000


def test_second_run_uses_cached_masks(folders, tmp_path, monkeypatch):
    pred_dir, gt_dir, _ = folders
    first, _ = evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4

    def fail(gt):
        raise AssertionError("mask data recomputed")

    monkeypatch.setattr(metrics, "compute_mask_data", fail)
    second, _ = evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=tmp_path / "cache", progress=False)
    assert second == pytest.approx(first, rel=1e-9)  # OpenCV may round the blur differently in the last bits


def test_resized_predictions(folders, tmp_path, capsys):
    pred_dir, gt_dir, pairs = folders
    small = tmp_path / "small"
    small.mkdir()
    for i, (pred, _) in enumerate(pairs):
        cv2.imwrite(str(small / f"img{i}.png"), cv2.resize(pred, (64, 48), interpolation=cv2.INTER_AREA))
    summary, _ = evaluate_predictions(small, gt_dir, workers=1, cache_dir=None, progress=False)
    assert "4 prediction(s) differ in size" in capsys.readouterr().err
    # the same as scoring predictions resized (bilinear) to the masks beforehand
    resized = [
        (cv2.resize(cv2.imread(str(small / f"img{i}.png"), 0), (128, 96)), gt) for i, (_, gt) in enumerate(pairs)
    ]
    assert summary["maxFm"] == pytest.approx(stock_summary(resized)["maxFm"], abs=1e-12)


def test_missing_and_unreadable_files_are_named(folders):
    pred_dir, gt_dir, _ = folders
    (pred_dir / "img2.png").unlink()
    with pytest.raises(EvaluationError, match="have no prediction .*img2"):
        evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=None, progress=False)
    summary, _ = evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=None, allow_missing=True, progress=False)
    assert summary["n"] == 3
    (pred_dir / "img1.png").write_bytes(b"garbage")
    with pytest.raises(EvaluationError, match=r"img1\.png"):
        evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=None, allow_missing=True, progress=False)


def test_test_py_end_to_end(tmp_path, tiny_official_checkpoint):
    splits = ["DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"]
    root = make_toy_dis5k(tmp_path / "data", splits=splits, n=2, layout=("im", "gt"), depths=("depth_large",))
    out = tmp_path / "test"
    command = [
        sys.executable,
        str(ROOT / "test.py"),
        "--checkpoint",
        tiny_official_checkpoint,
        "--data-root",
        str(root),
    ]
    command += ["--splits", *splits, "--out", str(out), "--input-size", "256", "--device", "cpu", "--batch-size", "1"]
    command += ["--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    metrics_by_split = json.loads((out / "metrics.json").read_text())
    assert list(metrics_by_split) == splits + ["TE-mean"]
    assert metrics_by_split["TE-mean"]["n"] == 8
    for split in splits:
        for name in ("0", "1"):
            pred = cv2.imread(str(out / "preds" / split / f"{split}_{name}.png"), cv2.IMREAD_UNCHANGED)
            gt = cv2.imread(str(root / split / "gt" / f"{split}_{name}.png"), cv2.IMREAD_UNCHANGED)
            assert pred.dtype == np.uint8 and pred.shape == gt.shape  # at the mask's own size
        assert (out / f"{split}.json").exists() and (out / f"{split}.csv").exists()
    table = (out / "results.md").read_text()
    assert (
        "| TE-mean |" in table
        and "test-time augmentation: no" in table
        and "| maxFm | maxFm_pr | wFm | MAE | Sm | meanEm | HCE |" in table
    )
    assert table in result.stdout
    # the Predictor a user runs writes test.py's PNG for the same image, weights and stored depth map
    from pdfnet.inference.predictor import Predictor
    from pdfnet.io import read_gray, read_image

    predictor = Predictor.from_checkpoint(tiny_official_checkpoint, device="cpu", depth_model=None, input_size=256)
    for name in ("DIS-TE1_0", "DIS-TE1_1"):
        image = read_image(root / "DIS-TE1" / "im" / f"{name}.jpg")
        depth = read_gray(root / "DIS-TE1" / "depth_large" / f"{name}.png")
        written = np.asarray(Image.open(out / "preds" / "DIS-TE1" / f"{name}.png"))
        assert np.array_equal(predictor.predict_mask(image, depth), written)
    # a second run into the same folder at once is refused; bad inputs are named before any work
    bad = subprocess.run(
        command[:2] + ["--checkpoint", str(tmp_path / "none.pth")] + command[4:],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and "no checkpoint at" in bad.stderr and "Traceback" not in bad.stderr
    os.remove(root / "DIS-TE2" / "depth_large" / "DIS-TE2_1.png")
    missing = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 1 and "prepare_depth.py" in missing.stderr and "Traceback" not in missing.stderr


def test_test_py_reruns_predict_what_is_missing_and_never_mix_options(tmp_path, tiny_official_checkpoint):
    root = make_toy_dis5k(tmp_path / "data", splits=["DIS-VD"], n=2, depths=("depth_large",))
    out = tmp_path / "test"
    command = [sys.executable, "-m", "pdfnet", "test", "--checkpoint", tiny_official_checkpoint, "--data-root"]
    command += [str(root), "--splits", "DIS-VD", "--out", str(out), "--input-size", "256", "--device", "cpu"]
    command += ["--workers", "1", "--cache-dir", str(tmp_path / "cache"), "--loader-workers", "0"]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    preds = sorted((out / "preds" / "DIS-VD").glob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in preds]
    os.remove(preds[1])  # as if interrupted: the rerun predicts that one only, and scores both
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    assert preds[0].stat().st_mtime_ns == stamps[0] and preds[1].exists()
    assert json.loads((out / "metrics.json").read_text())["DIS-VD"]["n"] == 2
    # other options would score two models' predictions together: refused, naming the difference
    other = subprocess.run(command + ["--tta"], capture_output=True, text=True)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "2 predictions were made with other options: tta=off (now on)" in other.stderr
    assert "--overwrite" in other.stderr and preds[0].stat().st_mtime_ns == stamps[0]
    assert subprocess.run(command + ["--tta", "--overwrite"], capture_output=True, text=True).returncode == 0
    assert preds[0].stat().st_mtime_ns != stamps[0]
