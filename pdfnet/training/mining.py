"""The original's hard-sample mining: odd epochs train only on the hardest half of the previous epoch."""

from __future__ import annotations

import torch

from ..model.network import PDFNetOutput
from .losses import segmentation_loss


@torch.no_grad()
def sample_losses(output: PDFNetOutput, mask: torch.Tensor, indices: torch.Tensor, variant: str) -> dict[int, float]:
    """Each sample's segmentation loss of the full-resolution output (the original's ranking)."""
    logits = output.logits[0].float()
    return {
        int(i): float(segmentation_loss(logits[b : b + 1], mask[b : b + 1].float(), variant))
        for b, i in enumerate(indices)
    }


def hardest_half(losses: dict[int, float]) -> list[int]:
    """The indices of the half of the samples with the highest loss (at least one)."""
    ranked = sorted(losses, key=lambda i: (-losses[i], i))  # ties by index: the same whatever the dict's order
    return ranked[: max(len(ranked) // 2, 1)]
