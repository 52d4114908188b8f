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

Cost: one erosion of the prediction, then one joint histogram, as for the F-measure curves (the mask's boundary
is one erosion more, kept by the mask cache).
The square's erosion is a running minimum along the rows, then along the columns, each from about log2(2d + 1)
elementwise minima (about half the time of ``cv2.erode`` by the square, the same map); BiRefNet's ``cv2.erode``
by a 3 x 3 square ``d`` times, after padding with one row and column of zeros, gives the same map too (a flat
erosion whose border is neutral composes: d 3 x 3 squares make the (2d + 1) square; the zero padding is what a
zero border value gives).
"""

from __future__ import annotations

import cv2
import numpy as np

from .histograms import level_histograms

DILATION_RATIO = 0.02  # Cheng et al.'s and BiRefNet's default: 2% of the image diagonal


def boundary_width(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """``d``, the boundary's width in pixels: ``round(ratio * diagonal)`` (half to even, as Python rounds),
    at least 1. 2048 x 3072: 74."""
    return max(1, int(round(ratio * float(np.sqrt(height**2 + width**2)))))


def inner_gradient(image_u8: np.ndarray, d: int) -> np.ndarray:
    """(H, W) uint8 -> ``image - erode(image)`` by a (2d + 1)-pixel square with zeros outside the image: a
    binary mask's boundary, a soft map's internal morphological gradient."""
    eroded = _running_minimum(_running_minimum(image_u8, d, axis=1), d, axis=0)  # the square: a row, a column
    return image_u8 - eroded  # erosion never raises a value: no wrap-around


def _running_minimum(image_u8: np.ndarray, d: int, axis: int) -> np.ndarray:
    """The minimum over the 2d + 1 pixels centred on each pixel along ``axis`` (0: columns, 1: rows), zeros
    outside the image: ``cv2.erode`` by a line, in about log2(2d + 1) elementwise minima of shifted copies
    (windows of 1, 2, 4, ... pixels, then two overlapping ones) instead of 2d + 1 comparisons per pixel."""
    n, length = 2 * d + 1, image_u8.shape[axis]
    pad = (d, d, 0, 0) if axis == 0 else (0, 0, d, d)
    window = cv2.copyMakeBorder(image_u8, *pad, cv2.BORDER_CONSTANT, value=0)  # window[i]: the minimum of [i, i + 1)

    def shifted(start: int, size: int) -> np.ndarray:
        return window[start : start + size] if axis == 0 else window[:, start : start + size]

    width = 1
    while 2 * width <= n:  # window[i] becomes the minimum of [i, i + 2 width)
        window = cv2.min(shifted(0, window.shape[axis] - width), shifted(width, window.shape[axis] - width))
        width *= 2
    # [i, i + n) in padded coordinates, the pixel i - d's window, as [i, i + width) and [i + n - width, i + n)
    return cv2.min(shifted(0, length), shifted(n - width, length))


def mask_boundary(gt: np.ndarray, ratio: float = DILATION_RATIO) -> np.ndarray:
    """(H, W) bool mask -> (H, W) bool: its pixels within ``d`` (chessboard) of its outside or the image's edge.
    It depends on the mask alone: the mask cache keeps it."""
    return inner_gradient(gt.view(np.uint8), boundary_width(*gt.shape, ratio)).view(bool)  # 0/1 stays 0/1


def boundary_iou_curve(
    levels_u8: np.ndarray, gt: np.ndarray, ratio: float = DILATION_RATIO, gt_boundary: np.ndarray | None = None
) -> np.ndarray:
    """One image's Boundary IoU at thresholds 255 .. 0 (pysodmetrics' curve order).

    Args:
        levels_u8: (H, W) uint8, the prediction as the F-measure curves see it: min-max normalised to [0, 1],
            times 255, truncated (BiRefNet's ``(pred * 255).astype(np.uint8)``).
        gt: (H, W) bool mask (binarised at > 128).
        gt_boundary: :func:`mask_boundary` of ``gt`` at ``ratio``, where already known.

    Returns:
        (256,) float64 in [0, 1].
    """
    if gt_boundary is None:
        gt_boundary = mask_boundary(gt, ratio)
    pred_boundary = inner_gradient(levels_u8, boundary_width(*gt.shape, ratio))
    outside, inside = level_histograms(pred_boundary, gt_boundary)  # per level, off and on the mask's boundary
    tp = np.cumsum(inside[::-1])  # boundary pixels of the mask at or above each threshold
    fp = np.cumsum(outside[::-1])
    return tp / (max(int(inside.sum()), 1) + fp)


def summarize_boundary(curves: list[np.ndarray]) -> dict[str, float]:
    """``maxBIoU`` and ``meanBIoU``: the maximum and mean of the split's mean curve (BiRefNet's numbers)."""
    mean = np.mean(curves, axis=0)
    return {"maxBIoU": float(mean.max()), "meanBIoU": float(mean.mean())}
