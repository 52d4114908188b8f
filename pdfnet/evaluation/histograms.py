"""Pixel counts per 8-bit level, exact at any image size: what every metric but weighted F and HCE reads."""

from __future__ import annotations

import cv2
import numpy as np


def histogram(image_u8: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(256,) int64 pixel counts per level of ``image_u8`` (where ``mask``, (H, W) bool, is set)."""
    counts = np.zeros(256, np.int64)
    if image_u8.size == 0:
        return counts
    rows = max(1, (1 << 24) // image_u8.shape[1])  # OpenCV counts in float32: exact below 2^24 per call
    for r in range(0, image_u8.shape[0], rows):
        part_mask = None if mask is None else mask[r : r + rows].view(np.uint8)
        counts += cv2.calcHist([image_u8[r : r + rows]], [0], part_mask, [256], [0, 256]).ravel().astype(np.int64)
    return counts


def level_histograms(image_u8: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(256,) int64 pixel counts per level of ``image_u8`` outside (first) and inside (second) ``mask`` ((H, W)
    bool), in one pass: OpenCV's joint histogram of the image and the mask, counted in float32, so in calls of
    under 2^24 pixels each."""
    counts = np.zeros((256, 2), np.int64)
    rows = max(1, (1 << 24) // max(image_u8.shape[1], 1))
    for r in range(0, image_u8.shape[0], rows):
        part = [image_u8[r : r + rows], mask[r : r + rows].view(np.uint8)]
        counts += cv2.calcHist(part, [0, 1], None, [256, 2], [0, 256, 0, 2]).astype(np.int64)
    return counts[:, 0], counts[:, 1]
