"""Validation during training: the original's F1torch and L1 on hand-built maps."""

import pytest
import torch

from pdfnet.training.validation import ValidationMeter, precision_recall


def test_precision_recall_of_a_hand_built_map():
    # 4 pixels: mask [1, 1, 0, 0]; probabilities [1.0, 0.5, 0.5, 0.0] -> 255 p = [255, 127.5, 127.5, 0].
    # histc(255 bins over [0, 255]) puts 255 in the last bin, 127.5 in bin 127, 0 in bin 0. Counted from the top,
    # at threshold index 0 (bin 254): TP 1, FP 0 -> precision 1 / (1 + 1e-4), recall 1 / (2 + 1e-4);
    # from index 127 (bin 127) on: TP 2, FP 1 -> precision 2 / (3 + 1e-4), recall 2 / (2 + 1e-4);
    # at the last index (bin 0): TP 2, FP 2.
    prob = torch.tensor([[1.0, 0.5], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    precision, recall = precision_recall(prob, mask)
    assert precision.shape == recall.shape == (255,)
    assert precision[0].item() == pytest.approx(1 / (1 + 1e-4))
    assert recall[0].item() == pytest.approx(1 / (2 + 1e-4))
    assert precision[127].item() == pytest.approx(2 / (3 + 1e-4))
    assert recall[127].item() == pytest.approx(2 / (2 + 1e-4))
    assert precision[254].item() == pytest.approx(2 / (4 + 1e-4))


def test_meter_takes_f_from_mean_precision_and_recall_and_mae_against_the_soft_mask():
    prob = torch.tensor([[1.0, 0.5], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    perfect, soft = mask.clone(), torch.tensor([[1.0, 0.8], [0.0, 0.0]])  # the mask itself, a soft mask
    meter = ValidationMeter()
    meter.update(torch.stack([prob, perfect])[:, None], torch.stack([mask, soft])[:, None])
    result = meter.result()
    # MAE against the masks as given (not binarised): (0 + 0.5 + 0.5 + 0) / 4 = 0.25 and (0 + 0.2 + 0 + 0) / 4
    assert result["MAE"] == pytest.approx((0.25 + 0.05) / 2)
    # F from the mean curves: at index 0 image 1 has P = 1, R = 1/2; image 2 (its mask binarised at 128/255:
    # both top pixels) P = 1, R = 1 -> mean P 1, R 3/4 -> F = 1.3 * 0.75 / (0.3 + 0.75) = 0.9286, the maximum
    assert result["maxFm"] == pytest.approx(1.3 * 0.75 / (0.3 + 0.75), rel=1e-3)
    assert result["n"] == 2
