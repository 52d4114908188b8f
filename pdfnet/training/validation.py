"""Validation during training, computed as the original computes it (its ``utiles.eval`` with ``F1torch``).

Per image, at the network's input size: precision and recall of the raw probability at 255 thresholds (a
255-bin histogram of ``255 p`` over [0, 255], counted from the top), with the mask binarised at ``255 m > 128``,
precision = TP / (TP + FP + 1e-4) and recall = TP / (|mask| + 1e-4); the MAE is the mean |p - m| against the
(resized, unbinarised) mask. Over the split: ``maxFm`` is the maximum over thresholds of F (beta^2 = 0.3, +1e-8
in the denominator) computed from the mean precision and mean recall curves, and ``MAE`` the mean MAE. These
pick ``best.pt``; the DIS metrics of ``test.py`` (pysodmetrics' conventions) are a different computation.
"""

from __future__ import annotations

import torch

from ..evaluation.metrics import BETA2

BINS = 255


def precision_recall(prob: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(255,) precision and recall curves of one image, thresholds from high to low, as ``F1torch`` computes
    them in float32. prob, mask: (H, W) in [0, 1]."""
    pd, gt = prob.float() * 255, mask.float() * 255
    fg = gt > 128
    tp = torch.histc(pd[fg], bins=BINS, min=0, max=255).flip(0).cumsum(0)
    fp = torch.histc(pd[~fg], bins=BINS, min=0, max=255).flip(0).cumsum(0)
    precision = tp / (tp + fp + 1e-4)
    recall = tp / (fg.sum().float() + 1e-4)
    return precision, recall


class ValidationMeter:
    """Accumulates precision and recall curves and absolute errors; ``result()`` gives ``maxFm`` and ``MAE``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.precision_sum = torch.zeros(BINS, dtype=torch.float64, device=device)
        self.recall_sum = torch.zeros(BINS, dtype=torch.float64, device=device)
        self.mae_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, probs: torch.Tensor, masks: torch.Tensor) -> None:
        """probs, masks: (B, 1, H, W) in [0, 1], the probability at the input size and the resized mask."""
        for prob, mask in zip(probs[:, 0].float(), masks[:, 0].float()):
            precision, recall = precision_recall(prob, mask.to(prob.device))
            self.precision_sum += precision.to(self.precision_sum)
            self.recall_sum += recall.to(self.recall_sum)
            self.mae_sum += (prob - mask.to(prob.device)).abs().mean().to(self.mae_sum)
            self.count += 1

    def all_reduce(self) -> None:
        """Sum the accumulators over all processes (a no-op without torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (self.precision_sum, self.recall_sum, self.mae_sum, self.count):
                torch.distributed.all_reduce(t)

    def result(self) -> dict[str, float]:
        n = max(float(self.count), 1.0)
        p, r = self.precision_sum / n, self.recall_sum / n
        f = (1 + BETA2) * p * r / (BETA2 * p + r + 1e-8)
        return {"maxFm": float(f.max()), "MAE": float(self.mae_sum / n), "n": int(self.count)}
