"""Scoring a folder on several processes: the same numbers as one process, in mask order, errors named."""

import cv2
import pytest
from test_metrics import synthetic_pair

from pdfnet.errors import EvaluationError
from pdfnet.evaluation.folders import evaluate_predictions


def test_two_processes_score_as_one(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for i in range(7):
        pred, gt = synthetic_pair(20 + i, 64, 80)
        cv2.imwrite(str(pred_dir / f"m{i}.png"), pred)
        cv2.imwrite(str(gt_dir / f"m{i}.png"), gt)
    one, one_scores = evaluate_predictions(pred_dir, gt_dir, workers=1, cache_dir=None, progress=False)
    two, two_scores = evaluate_predictions(pred_dir, gt_dir, workers=2, cache_dir=tmp_path / "c", progress=False)
    assert [s.name for s in two_scores] == [f"m{i}" for i in range(7)]  # mask order, whoever scored them
    assert two == pytest.approx(one, rel=1e-12)
    (pred_dir / "m4.png").write_bytes(b"not an image")
    with pytest.raises(EvaluationError, match=r"m4\.png"):
        evaluate_predictions(pred_dir, gt_dir, workers=2, cache_dir=None, progress=False)
