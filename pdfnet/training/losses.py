"""PDFNet's training objective: structure + SSIM segmentation loss, the depth integrity-prior loss and the
SILog loss of the depth refinement decoder, each deeply supervised.

All terms are computed per sample and averaged over the batch. The original computes the integrity prior's
mean foreground depth, the SILog statistics and the depth normalisation over the whole batch; at its batch
size of 1 the two agree exactly, and per-sample terms keep a sample's loss independent of its batchmates
(which also makes data-parallel training equal to one large batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import check_variant
from ..model.layers import resize
from ..model.network import PDFNetOutput, normalize_depth

# Weights of the deep supervision: the full-resolution output counts fully, every side output half.
MAIN_WEIGHT, SIDE_WEIGHT = 1.0, 0.5


def boundary_weight(mask: torch.Tensor) -> torch.Tensor:
    """The structure loss's pixel weights: 1 + 5 |boxfilter31(mask) - mask|, up to 6x near the boundary."""
    return 1 + 5 * (F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask).abs()


def structure_loss(
    logits: torch.Tensor, mask: torch.Tensor, iou_smooth: float = 1e-6, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Boundary-weighted BCE plus weighted IoU (the F3Net structure loss), averaged over the batch.

    Args:
        logits: (B, 1, H, W) raw predictions.
        mask: (B, 1, H, W) ground truth in {0, 1}.
        iou_smooth: smoothing of the IoU ratio (``release`` 1, ``cvpr`` 1e-6).
        weight: :func:`boundary_weight` of the mask, when the caller has it already.
    """
    weight = boundary_weight(mask) if weight is None else weight
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    prob = logits.sigmoid()
    inter = (prob * mask * weight).sum(dim=(2, 3))
    union = ((prob + mask) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + iou_smooth) / (union - inter + iou_smooth)
    return (wbce + wiou).mean()


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised Gaussian; the 2-D SSIM window is its outer product with itself."""
    x = torch.tensor([math.exp(-((i - size // 2) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=torch.float32)
    return x / x.sum()


def gaussian_blur(x: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """(B, C, H, W) blurred by the 11x11 Gaussian window (sigma 1.5) with zero padding, as two 1-D passes over
    all channels at once (the separable window: the same sums as the 2-D convolution, an eighth of the work)."""
    g = _gaussian_1d(window_size).to(device=x.device, dtype=x.dtype)
    C, pad = x.shape[1], window_size // 2
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(pad, 0), groups=C)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, pad), groups=C)


def ssim_loss(prob: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """(1 - SSIM) / 2 with an 11x11 Gaussian window (sigma 1.5) and zero padding; inputs (B, 1, H, W) in [0, 1].

    The mean SSIM over all pixels of equally sized samples is also the mean of the per-sample means.
    """
    blurred = gaussian_blur(torch.cat([prob, target, prob * prob, target * target, prob * target], dim=1), window_size)
    mu1, mu2, sq1, sq2, cross = blurred.unbind(dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    var1, var2, cov = sq1 - mu1_sq, sq2 - mu2_sq, cross - mu12
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu12 + c1) * (2 * cov + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))
    return 1 - (1 + ssim.mean()) / 2


def _sobel(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|d/dx| + |d/dy| of (B, 1, H, W) by 3x3 Sobel kernels with zero padding."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=depth.device, dtype=depth.dtype)
    gx = F.conv2d(depth, kx[None, None], padding=1).abs()
    gy = F.conv2d(depth, kx.t()[None, None], padding=1).abs()
    return gx, gy


def integrity_prior_loss(
    prob: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor,
    eps: float = 1e-8,
    variant: str = "cvpr",
    gradients: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The depth integrity-prior loss: errors cost more where the depth says they break the object's integrity.

    Args:
        prob: (B, 1, H, W) predicted foreground probability.
        depth: (B, 1, H, W) pseudo-depth in [0, 1].
        mask: (B, 1, H, W) ground truth in {0, 1}.

    With p_y the probability of the true class and d the squared distance of the depth from the mean
    foreground depth, false positives cost d (far from the object's depth is worse), false negatives 1 - d,
    both scaled by -log p_y; a second term charges -log p_y where the depth has strong Sobel gradients.
    The mean foreground depth divides by the mask's area (+eps in ``cvpr``; in ``release`` an empty mask gives
    a mean of 0 instead of the original's division by zero).
    """
    py = mask * prob + (1 - mask) * (1 - prob)
    false_pos = (1 - py) * prob
    false_neg = (1 - py) * mask
    log_p = -torch.log(py + eps)
    area = mask.sum(dim=(1, 2, 3), keepdim=True)
    area = area + eps if variant == "cvpr" else area.clamp_min(torch.finfo(area.dtype).tiny)
    mean_depth = (depth * mask).sum(dim=(1, 2, 3), keepdim=True) / area
    diff = (depth - mean_depth) ** 2
    variance = log_p * (diff * false_pos + (1 - diff) * false_neg) * py
    gx, gy = _sobel(depth) if gradients is None else gradients
    return variance.mean() + (gx * log_p + gy * log_p).mean()


def silog_loss(prob: torch.Tensor, target: torch.Tensor, lambd: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss sqrt(mean(g^2) - lambd mean(g)^2 + eps), g = log(target) - log(pred), per sample.

    Args:
        prob: (B, 1, H, W) predicted depth in [0, 1] (sigmoid of the depth logits).
        target: (B, 1, H, W) depth in [0, 1].
    """
    g = (torch.log(target.float() + eps) - torch.log(prob.float() + eps)).flatten(1)
    return torch.sqrt(g.pow(2).mean(dim=1) - lambd * g.mean(dim=1).pow(2) + eps).mean()


def iou_smoothing(variant: str) -> float:
    """The IoU smoothing of the structure loss: 1 in ``release``, 1e-6 in ``cvpr``."""
    return 1.0 if check_variant(variant) == "release" else 1e-6


def segmentation_loss(
    logits: torch.Tensor, mask: torch.Tensor, variant: str = "cvpr", weight: torch.Tensor | None = None
) -> torch.Tensor:
    """structure + SSIM / 2 of one output (B, 1, H, W) against the mask (B, 1, H, W): the segmentation term of
    each deeply supervised output, and the original's per-sample ranking for hard-sample mining."""
    return structure_loss(logits, mask, iou_smoothing(variant), weight) + 0.5 * ssim_loss(logits.sigmoid(), mask)


def _upsampled(logits: list[torch.Tensor], size: torch.Size) -> list[torch.Tensor]:
    # The loss resizes with align_corners=False, unlike the network (a difference of the original, kept).
    return [resize(x, size, align_corners=False) for x in logits]


def _deep_supervision(terms: list[torch.Tensor]) -> torch.Tensor:
    return MAIN_WEIGHT * terms[0] + SIDE_WEIGHT * sum(terms[1:])


def pdfnet_loss(
    output: PDFNetOutput,
    mask: torch.Tensor,
    depth_target: torch.Tensor | None,
    variant: str = "cvpr",
    integrity_prior: bool = True,
) -> dict[str, torch.Tensor]:
    """PDFNet's training loss.

    Args:
        output: the network's output; its ``depth_logits`` may be None (then the depth term is 0).
        mask: (B, 1, H, W) ground truth in {0, 1}.
        depth_target: (B, 1, H, W) pseudo-depth in [0, 1] as loaded (the original's ``depth_large_1024``);
            min-max normalised here per sample. None where no term needs it (an RGB-only model).
        variant: "cvpr" or "release": IoU smoothing 1e-6 or 1, epsilon in the integrity prior or not.
        integrity_prior: include the depth integrity-prior term (``loss.integrity_prior``; else it is 0).

    Returns:
        ``segmentation`` = sum_i w_i (structure_i + 0.5 SSIM_i), ``integrity`` = sum_i w_i prior_i,
        ``depth`` = sum_j w_j SILog_j, with w = 1 for the first output and 0.5 for the others, and
        ``total`` = segmentation + integrity / 2 + depth / 10. Scalars; a term switched off is 0.

    Raises:
        ValueError: ``depth_target`` is None but the integrity prior or the depth head needs it.
    """
    check_variant(variant)
    needs_depth = [
        name
        for name, on in (
            ("the integrity prior", integrity_prior),
            ("the depth head's loss", output.depth_logits is not None),
        )
        if on
    ]
    if depth_target is None and needs_depth:
        raise ValueError(f"{' and '.join(needs_depth)} need(s) a depth target")
    mask = mask.float()
    logits = _upsampled([x.float() for x in output.logits], mask.shape[-2:])
    zero = torch.zeros((), device=mask.device)
    depth = normalize_depth(depth_target.float()) if needs_depth else None
    # what depends only on the targets is computed once for the six outputs
    weight = boundary_weight(mask)
    segmentation = _deep_supervision([segmentation_loss(x, mask, variant, weight) for x in logits])
    integrity = zero
    if integrity_prior:
        gradients = _sobel(depth)
        integrity = _deep_supervision(
            [integrity_prior_loss(x.sigmoid(), depth, mask, variant=variant, gradients=gradients) for x in logits]
        )
    depth_term = zero
    if output.depth_logits is not None:
        depth_logits = _upsampled([x.float() for x in output.depth_logits], depth.shape[-2:])
        depth_term = _deep_supervision([silog_loss(x.sigmoid(), depth) for x in depth_logits])
    total = segmentation + integrity / 2 + depth_term / 10
    return {"total": total, "segmentation": segmentation, "integrity": integrity, "depth": depth_term}
