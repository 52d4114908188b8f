"""Validation during training: max F-measure and MAE over a split, reduced across processes.

The definitions follow pysodmetrics (the DIS literature's scorer): predictions are min-max normalised per
image and quantised to 0..255, masks binarised at 0.5, F-measure with beta^2 = 0.3 at 256 thresholds
(prediction >= t), and max F is the maximum over thresholds of the mean per-image F curve.
"""

from __future__ import annotations

import torch

BETA2 = 0.3


def normalize(pred: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation in float64, as pysodmetrics (a constant map is left as it is)."""
    pred = pred.double()
    lo, hi = pred.min(), pred.max()
    return (pred - lo) / (hi - lo) if hi > lo else pred


def quantize(pred: torch.Tensor) -> torch.Tensor:
    """(H, W) probability -> integer levels floor(255 p) of the normalised map, 0..255."""
    return (normalize(pred) * 255).clamp(0, 255).to(torch.int64)


def f_curve(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(256,) F-measure of ``pred >= t`` for t = 255 .. 0 (pysodmetrics' order); pred (H, W) in [0, 1], mask
    (H, W) binarised at 0.5."""
    levels = quantize(pred).flatten()
    fg = mask.flatten() > 0.5
    fg_hist = torch.bincount(levels[fg], minlength=256).flip(0).cumsum(0).double()
    bg_hist = torch.bincount(levels[~fg], minlength=256).flip(0).cumsum(0).double()
    predicted = (fg_hist + bg_hist).clamp_min(1)
    precision = fg_hist / predicted
    recall = fg_hist / max(int(fg.sum()), 1)
    numerator = (1 + BETA2) * precision * recall
    denominator = torch.where(numerator == 0, torch.ones_like(numerator), BETA2 * precision + recall)
    return numerator / denominator


class ValidationMeter:
    """Accumulates per-image F curves and absolute errors; ``result()`` gives ``maxFm`` and ``MAE``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.curve_sum = torch.zeros(256, dtype=torch.float64, device=device)
        self.mae_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, probs: torch.Tensor, masks: torch.Tensor) -> None:
        """probs, masks: (B, 1, H, W) in [0, 1]."""
        for prob, mask in zip(probs[:, 0].float(), masks[:, 0].float()):
            self.curve_sum += f_curve(prob, mask).to(self.curve_sum.device)
            self.mae_sum += (normalize(prob) - (mask > 0.5).double()).abs().mean().to(self.mae_sum.device)
            self.count += 1

    def all_reduce(self) -> None:
        """Sum the accumulators over all processes (a no-op without torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (self.curve_sum, self.mae_sum, self.count):
                torch.distributed.all_reduce(t)

    def result(self) -> dict[str, float]:
        n = max(float(self.count), 1.0)
        return {"maxFm": float((self.curve_sum / n).max()), "MAE": float(self.mae_sum / n), "n": int(self.count)}
