"""Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021)
over 256 thresholds, as BiRefNet's evaluation computes and reports it (``maxBIoU``, ``meanBIoU``).

A mask's boundary is the part of it within ``d`` pixels of its outside (the image border counts as outside):
the mask minus its erosion by a (2d + 1) x (2d + 1) square, ``d = max(1, round(0.02 * image diagonal))``.
BiRefNet takes that difference on the 8-bit prediction itself (its internal morphological gradient,
``p - erode(p)``), thresholds the result at every level t = 255 .. 0 (``>= t``) and scores each against the
mask's boundary: IoU(t) = |P_t & G_b| / |P_t | G_b| = TP(t) / (|G_b| + FP(t)). The per-image curves are averaged
over a split; ``maxBIoU`` and ``meanBIoU`` are the maximum and mean of that mean curve.

For a binary prediction (0/255) every threshold but 0 gives Cheng et al.'s Boundary IoU of the two masks. For a
soft prediction the curve is BiRefNet's, not Cheng et al.'s at each threshold (that would threshold first and
take the boundary of ``p >= t``). At threshold 0 every pixel is predicted: IoU = |G_b| / (H W).

Cost: one erosion of the prediction and one of the mask, then one joint histogram, as for the F-measure curves.
OpenCV erodes by the square in one separable pass; BiRefNet's ``cv2.erode`` by a 3 x 3 square ``d`` times, after
padding with one row and column of zeros, gives the same map (a flat erosion whose border is neutral composes:
d 3 x 3 squares make the (2d + 1) square; the zero padding is what a zero border value gives).
"""

from __future__ import annotations

import cv2
import numpy as np

DILATION_RATIO = 0.02  # Cheng et al.'s and BiRefNet's default: 2% of the image diagonal


def boundary_width(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """``d``, the boundary's width in pixels: ``round(ratio * diagonal)`` (half to even, as Python rounds),
    at least 1. 2048 x 3072: 74."""
    return max(1, int(round(ratio * float(np.sqrt(height**2 + width**2)))))


def inner_gradient(image_u8: np.ndarray, d: int) -> np.ndarray:
    """(H, W) uint8 -> ``image - erode(image)`` by a (2d + 1)-pixel square with zeros outside the image: a
    binary mask's boundary, a soft map's internal morphological gradient."""
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    eroded = cv2.erode(image_u8, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return image_u8 - eroded  # erosion never raises a value: no wrap-around


def boundary_iou_curve(levels_u8: np.ndarray, gt: np.ndarray, ratio: float = DILATION_RATIO) -> np.ndarray:
    """One image's Boundary IoU at thresholds 255 .. 0 (pysodmetrics' curve order).

    Args:
        levels_u8: (H, W) uint8, the prediction as the F-measure curves see it: min-max normalised to [0, 1],
            times 255, truncated (BiRefNet's ``(pred * 255).astype(np.uint8)``).
        gt: (H, W) bool mask (binarised at > 128).

    Returns:
        (256,) float64 in [0, 1].
    """
    d = boundary_width(*gt.shape, ratio)
    pred_boundary = inner_gradient(levels_u8, d)
    gt_boundary = inner_gradient(gt.astype(np.uint8) * 255, d) > 128
    # level + 256 for pixels of the mask's boundary; 16-bit codes count twice as fast as int64 ones
    codes = pred_boundary.astype(np.uint16) | (gt_boundary.view(np.uint8).astype(np.uint16) << 8)
    counts = np.bincount(codes.ravel(), minlength=512)
    tp = np.cumsum(counts[256:][::-1])  # boundary pixels of the mask at or above each threshold
    fp = np.cumsum(counts[:256][::-1])
    return tp / (max(int(counts[256:].sum()), 1) + fp)


def summarize_boundary(curves: list[np.ndarray]) -> dict[str, float]:
    """``maxBIoU`` and ``meanBIoU``: the maximum and mean of the split's mean curve (BiRefNet's numbers)."""
    mean = np.mean(curves, axis=0)
    return {"maxBIoU": float(mean.max()), "meanBIoU": float(mean.mean())}
