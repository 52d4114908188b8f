"""The DIS metrics, numerically equal to pysodmetrics (and, for HCE, to the DIS protocol) but much faster.

Conventions (pysodmetrics'): a prediction is an 8-bit map, divided by 255 and min-max normalised per image; a
mask is binarised at > 128. F-measure uses beta^2 = 0.3 at 256 thresholds (prediction >= t); ``maxFm`` and
``meanFm`` are the maximum and mean of the mean per-image F curve (the DIS and BiRefNet convention),
``maxFm_pr`` the maximum of F computed from the mean precision and recall curves (the PDFNet code's
convention); weighted F uses beta = 1; S-measure alpha = 0.5; E-measure curve mean and max; adaptive F and E
threshold at twice the mean prediction. HCE follows the DIS protocol: prediction and mask binarised at raw
value > 128, relax 5, polygon tolerance 2.0, mask skeleton from scikit-image. Boundary IoU (``maxBIoU``,
``meanBIoU``) is BiRefNet's: see :mod:`pdfnet.evaluation.boundary`.

How it is fast, each step exact (checked against the libraries in ``tests/test_metrics*.py``):

- every metric but weighted F and HCE reads the prediction through per-level histograms (one pass per
  S-measure quadrant): an 8-bit map takes 256 values, so sums over pixels are sums over levels;
- weighted F blurs only the object's box and weighs the background by a table of the importance per squared
  distance (OpenCV's exact distance transform); the importance is exactly 2.0 beyond 265 pixels, so the
  distances are computed only over the box that holds the object and the erring background pixels near it;
- HCE's boundary filter is vectorised, its regions read from the contour hierarchy;
- the mask-only parts, the skeleton HCE needs, the nearest-object offsets weighted F needs near the object
  (:mod:`.geometry`, exact equivalents of scikit-image's and scipy's) and the boundary Boundary IoU needs, are
  computed once per mask and cached (see :class:`MaskCache`).
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..io import atomic_path
from .boundary import boundary_iou_curve, mask_boundary, summarize_boundary
from .geometry import BAND, band_indices, nearest_indices, nearest_object_codes, skeletonize
from .histograms import histogram, level_histograms  # noqa: F401 (histogram: still importable from here)

EPS = np.spacing(1)  # MATLAB's eps, as pysodmetrics
BETA2 = 0.3
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # skimage.morphology.disk(1), the DIS kernel
RELAX, HCE_EPSILON = 5, 2.0


# ------------------------------------------------------------------------------------------ per mask, cached


@dataclass
class MaskData:
    """What the metrics need of one mask besides the mask itself.

    Attributes:
        skeleton: (H, W) bool, scikit-image's skeleton of the binarised mask (HCE).
        band: (N,) int64, the flat indices, in raster order, of the background pixels within 3 (Chebyshev) of
            the object (:func:`.geometry.band_indices`), the pixels whose error weighted F's blur reads.
        nearest: (N,) int8, for each of them the offset of its nearest object pixel as scipy's Euclidean feature
            transform picks it, coded (dy + 4) * 9 + dx + 5 (:func:`.geometry.encode_offset`).
        boundary: (H, W) bool, the mask's boundary for Boundary IoU (:func:`.boundary.mask_boundary`).
    """

    skeleton: np.ndarray
    band: np.ndarray
    nearest: np.ndarray
    boundary: np.ndarray

    @property
    def band_codes(self) -> np.ndarray:
        """(H, W) int8: ``nearest`` at the band's pixels, 0 elsewhere (:func:`.geometry.nearest_object_codes`)."""
        codes = np.zeros(self.skeleton.shape, np.int8)
        codes.ravel()[self.band] = self.nearest
        return codes


def compute_mask_data(gt: np.ndarray) -> MaskData:
    """The mask-only part of HCE, weighted F and Boundary IoU. ``gt``: (H, W) bool."""
    band = band_indices(gt)
    return MaskData(skeletonize(gt), band, nearest_object_codes(gt).ravel()[band], mask_boundary(gt))


class MaskCache:
    """Mask-derived data on disk, keyed by the mask file's content, so a second evaluation skips it.

    An entry holds the binarised mask, its skeleton and its boundary as packed bits and the nearest-object codes
    of the band's pixels (the band itself is found again from the mask: a dilation costs less than reading it),
    about 0.8 MB for a 2048x3072 mask of thin lines (the benchmark's), compressed.

    Args:
        folder: where the cache lives (created); None keeps nothing.
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, gt_path: str | os.PathLike, gt: np.ndarray) -> MaskData:
        """The data of the mask file ``gt_path``, whose binarised pixels ``gt`` ((H, W) bool) are."""
        return self.read(gt_path, lambda: gt)[1]

    def read(self, gt_path: str | os.PathLike, decode: Callable[[], np.ndarray]) -> tuple[np.ndarray, MaskData]:
        """The binarised mask ((H, W) bool) of the file ``gt_path`` and its data: both from the cache when it
        holds them (a mask read back from its packed bits costs a few ms, decoding its PNG 15-25 ms at DIS
        sizes), else the mask from ``decode()`` and its data computed and cached."""
        try:
            key = None if self.folder is None else hashlib.sha1(Path(gt_path).read_bytes()).hexdigest()
        except OSError:  # unreadable: ``decode`` says why
            key = None
        if key is None:
            gt = decode()
            return gt, compute_mask_data(gt)
        path = self.folder / f"{key}.npz"
        if path.exists():
            try:
                return _read_entry(path)
            except (OSError, ValueError, KeyError):  # a damaged entry (or one from an older version) is redone
                pass
        gt = decode()
        data = compute_mask_data(gt)
        packed = {k: np.packbits(a) for k, a in zip(_BITS, (gt, data.skeleton, data.boundary))}
        _write_entry(path, shape=np.array(gt.shape), nearest=data.nearest, **packed)
        return gt, data


_BITS = ("mask", "skeleton", "boundary")  # the cache's arrays of bits


def _write_entry(path: Path, **arrays: np.ndarray) -> None:
    """``arrays`` as ``np.savez_compressed`` writes them, but deflated at level 1: at 2048x3072, 25 ms instead of
    150 ms for a third more bytes (0.8 MB against 0.6 MB for the benchmark's masks of thin lines), read as fast."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def _read_entry(path: Path) -> tuple[np.ndarray, MaskData]:
    with np.load(path) as f:
        shape = tuple(int(n) for n in f["shape"])
        gt, skeleton, boundary = (
            np.unpackbits(f[k], count=shape[0] * shape[1]).reshape(shape).view(bool) for k in _BITS
        )
        nearest = f["nearest"]
    band = band_indices(gt)
    if nearest.shape != band.shape or nearest.dtype != np.int8:
        raise ValueError(f"{path}: {nearest.size} codes for a band of {band.size} pixels")
    return gt, MaskData(skeleton, band, nearest, boundary)


# ------------------------------------------------------------------------------------------------ per image


@dataclass
class ImageScores:
    """One image's scores; curves run over thresholds 255 .. 0 (pysodmetrics' order)."""

    precision: np.ndarray
    recall: np.ndarray
    fm_curve: np.ndarray
    em_curve: np.ndarray
    adp_fm: float
    adp_em: float
    wfm: float
    mae: float
    sm: float
    hce: float
    name: str = ""
    extra: dict = field(default_factory=dict)


def level_values(pred_u8: np.ndarray) -> np.ndarray:
    """(256,) float64: the normalised prediction value of each 8-bit level, computed as pysodmetrics computes it
    per pixel (divided by 255, then min-max normalised), so that sums over level histograms equal sums over
    pixels. Every metric but HCE sees the prediction only through these values."""
    levels = np.arange(256) / 255.0
    lo, hi, _, _ = cv2.minMaxLoc(pred_u8)
    lo, hi = int(lo) / 255.0, int(hi) / 255.0
    return (levels - lo) / (hi - lo) if hi != lo else levels


@dataclass
class _Levels:
    """One image's prediction as level statistics: what all metrics but weighted F and HCE need."""

    values: np.ndarray  # (256,) normalised value per level
    bg: np.ndarray  # (256,) counts outside the mask
    fg: np.ndarray  # (256,) counts inside the mask
    quadrants: list[tuple[np.ndarray, np.ndarray]]  # S-measure's four regions around the centroid: (bg, fg)
    quadrant_weights: tuple[float, float, float, float]
    size: int


def _levels(pred_u8: np.ndarray, gt: np.ndarray) -> _Levels:
    h, w = gt.shape
    per_row = cv2.reduce(gt.view(np.uint8), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()  # exact integer counts
    count = int(per_row.sum())
    if count:
        # the centroid (pysodmetrics: argwhere().mean().round()); sums of integer coordinates are exact
        per_column = cv2.reduce(gt.view(np.uint8), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        cy = int(np.round(np.dot(per_row.astype(np.int64), np.arange(h)) / count)) + 1
        cx = int(np.round(np.dot(per_column.astype(np.int64), np.arange(w)) / count)) + 1
    else:  # S-measure does not use the regions then
        cy, cx = h, w
    area = h * w
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    quadrants = []
    for rows, cols in ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w))) + (
        (slice(cy, h), slice(0, cx)),
        (slice(cy, h), slice(cx, w)),
    ):
        quadrants.append(level_histograms(pred_u8[rows, cols], gt[rows, cols]))
    bg = sum(q[0] for q in quadrants)
    fg = sum(q[1] for q in quadrants)
    return _Levels(level_values(pred_u8), bg, fg, quadrants, (w_lt, w_rt, w_lb, w_rb), area)


def _curves(lv: _Levels) -> tuple[np.ndarray, ...]:
    """Precision, recall, F and E curves at thresholds 255 .. 0 of the normalised prediction."""
    # pysodmetrics thresholds (prediction * 255).astype(uint8): each level falls in one such bin
    bins = (lv.values * 255).astype(np.uint8)
    bg_hist = np.bincount(bins, weights=lv.bg, minlength=256).astype(np.int64)
    fg_hist = np.bincount(bins, weights=lv.fg, minlength=256).astype(np.int64)
    tp = np.cumsum(fg_hist[::-1])  # predicted foreground at thresholds 255 .. 0, inside the mask
    fp = np.cumsum(bg_hist[::-1])
    positives = tp + fp
    gt_fg = int(fg_hist.sum())
    precision = tp / np.where(positives == 0, 1, positives)
    recall = tp / max(gt_fg, 1)
    num = (1 + BETA2) * precision * recall
    fm = num / np.where(num == 0, 1, BETA2 * precision + recall)
    em = _enhanced_alignment(tp, fp, gt_fg, lv.size)
    return precision, recall, fm, em


def _enhanced_alignment(tp, fp, gt_fg: int, size: int):
    """E-measure from counts (vectorised over thresholds): Fan et al. 2018, as pysodmetrics computes it."""
    pred_fg = tp + fp
    pred_bg = size - pred_fg
    if gt_fg == 0:
        total = pred_bg
    elif gt_fg == size:
        total = pred_fg
    else:
        fn = gt_fg - tp
        tn = pred_bg - fn
        mean_pred, mean_gt = pred_fg / size, gt_fg / size
        parts = ((tp, 1 - mean_pred, 1 - mean_gt), (fp, 1 - mean_pred, -mean_gt))
        parts += ((fn, -mean_pred, 1 - mean_gt), (tn, -mean_pred, -mean_gt))
        total = 0
        for count, a, b in parts:
            align = 2 * (a * b) / (a**2 + b**2 + EPS)
            total = total + (align + 1) ** 2 / 4 * count
    return total / (size - 1 + EPS)


def _adaptive_threshold(lv: _Levels, pred_u8: np.ndarray) -> float:
    """min(2 * mean prediction, 1), the mean as pysodmetrics sums it over pixels wherever the level sum could
    fall on the other side of a level value."""
    threshold = min(2 * float(np.dot(lv.bg + lv.fg, lv.values)) / lv.size, 1)
    present = lv.values[(lv.bg + lv.fg) > 0]
    if np.any(np.abs(present - threshold) <= 1e-12 * max(threshold, 1e-300)):
        threshold = min(2 * cv2.LUT(pred_u8, lv.values).mean(), 1)
    return threshold


def _adaptive_scores(lv: _Levels, pred_u8: np.ndarray) -> tuple[float, float]:
    """F and E of the prediction binarised at min(2 mean, 1)."""
    chosen = lv.values >= _adaptive_threshold(lv, pred_u8)
    tp = int(lv.fg[chosen].sum())
    fp = int(lv.bg[chosen].sum())
    gt_fg = int(lv.fg.sum())
    if tp == 0:
        fm = 0.0
    else:
        pre, rec = tp / (tp + fp), tp / gt_fg
        fm = (1 + BETA2) * pre * rec / (BETA2 * pre + rec)
    em = float(_enhanced_alignment(np.array(tp), np.array(fp), gt_fg, lv.size))
    return fm, em


def _mean_absolute_error(lv: _Levels) -> float:
    """mean |prediction - mask| of the normalised prediction."""
    return float((np.dot(lv.bg, lv.values) + np.dot(lv.fg, 1 - lv.values)) / lv.size)


def _s_measure(lv: _Levels, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017): object and region similarity.

    pysodmetrics' formulas, evaluated on histograms of the 256 prediction levels instead of pixel arrays
    (the prediction takes only those values).
    """
    values, bg_hist, fg_hist, size = lv.values, lv.bg, lv.fg, lv.size
    n_fg = int(fg_hist.sum())
    y = n_fg / size
    if n_fg == 0:
        return float(1 - np.dot(bg_hist, values) / size)
    if n_fg == size:
        return float(np.dot(fg_hist, values) / size)
    object_score = _s_object(fg_hist, values) * y + _s_object(bg_hist, 1 - values) * (1 - y)
    region = sum(_ssim(bg, fg, values) * weight for (bg, fg), weight in zip(lv.quadrants, lv.quadrant_weights))
    return float(max(0.0, alpha * object_score + (1 - alpha) * region))


def _s_object(counts: np.ndarray, values: np.ndarray) -> float:
    """Object similarity of the pixels counted in ``counts`` (per level) taking ``values``."""
    n = counts.sum()
    mean = np.dot(counts, values) / n
    std = np.sqrt(np.dot(counts, (values - mean) ** 2) / (n - 1)) if n > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _ssim(bg_hist: np.ndarray, fg_hist: np.ndarray, values: np.ndarray) -> float:
    """pysodmetrics' region SSIM of one quadrant, from its level histograms outside and inside the mask."""
    n1 = fg_hist.sum()
    n = bg_hist.sum() + n1
    if n == 0:  # an empty quadrant (centroid on the last row or column) weighs 0; pysodmetrics gives NaN here
        return 0.0
    x = np.dot(bg_hist + fg_hist, values) / n
    y = n1 / n
    dev = values - x
    sigma_x = np.dot(bg_hist + fg_hist, dev**2) / (n - 1 + EPS)
    sigma_y = (n1 * (1 - y) ** 2 + (n - n1) * y**2) / (n - 1 + EPS)
    sigma_xy = (np.dot(fg_hist, dev) * (1 - y) - np.dot(bg_hist, dev) * y) / (n - 1 + EPS)
    a = 4 * x * y * sigma_xy
    b = (x**2 + y**2) * (sigma_x + sigma_y)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


# -------------------------------------------------------------------------------------------- weighted F


def _gauss_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    # fspecial('gaussian', 7, 5) is the outer product of this vector with itself (no tail is cut at sigma 5)
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _importance_table() -> np.ndarray:
    """Weighted F's importance of a background pixel, 2 - 0.5^(d / 5), per squared distance d^2 to the object
    (computed as pysodmetrics computes it from scipy's distance, the exact square root), up to the first d^2
    from which it is exactly 2.0 in float64; 0 at d^2 = 0 (object pixels, counted apart)."""
    squared = np.arange(72000, dtype=np.float64)
    table = 2 - np.exp(np.log(0.5) / 5 * np.sqrt(squared))
    saturated = np.flatnonzero(table < 2)[-1] + 1
    assert saturated < table.size - 1
    table = table[: saturated + 1]
    table[0] = 0.0
    return table


_IMPORTANCE = _importance_table()
_EXCESS = _IMPORTANCE - 2  # importance - 2 (exact: Sterbenz), 0 from where the importance is 2.0
_EXCESS[0] = 0.0  # d^2 = 0: an object pixel, not counted
# the importance is 2.0 from d^2 = _IMPORTANCE.size - 1 on: a pixel more than this margin (Chebyshev) from the
# object's box is at least margin + 1 from every object pixel, and (margin + 1)^2 exceeds that
_SATURATION_MARGIN = math.isqrt(_IMPORTANCE.size - 1)
_STRIP = 128  # rows blurred at a time: float64 buffers of a few MB, reused instead of faulted in anew


def _object_box(gt: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The rows and columns of the object's bounding box grown by ``margin`` (clipped to the image)."""
    rows = np.flatnonzero(np.any(gt, axis=1))
    cols = np.flatnonzero(np.any(gt, axis=0))
    h, w = gt.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


def weighted_f(pred_u8: np.ndarray, gt: np.ndarray, band_codes: np.ndarray, beta: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014) as pysodmetrics computes it.

    Args:
        pred_u8: (H, W) uint8 prediction.
        gt: (H, W) bool mask.
        band_codes: (H, W) int8, :func:`.geometry.nearest_object_codes` of the mask.
    """
    band = np.flatnonzero(band_codes)
    return _weighted_f(pred_u8, gt, band, band_codes.ravel()[band], _levels(pred_u8, gt), beta)


def _weighted_f(
    pred_u8: np.ndarray, gt: np.ndarray, band: np.ndarray, nearest: np.ndarray, lv: _Levels, beta: float = 1.0
) -> float:
    """``band``, ``nearest``: as :class:`MaskData` holds them."""
    if not gt.any():
        return 0.0
    # the error E is |prediction - mask|: 1 - value inside the object, value outside
    error_in = 1 - lv.values
    # inside the object the error is min(E, EA), EA the 7x7 Gaussian blur of E with each nearby background
    # pixel taking the error of its nearest object pixel. Per pixel, the level whose error the blur reads: its
    # own on the object, its nearest object pixel's in the band, elsewhere one of error exactly 0 (value 1: the
    # maximum level, or 255 for a constant prediction)
    own = np.full(gt.shape, np.flatnonzero(lv.values == 1.0)[0], np.uint8)  # the object's levels, error 0 elsewhere
    cv2.copyTo(pred_u8, gt.view(np.uint8), own)
    spread = own.copy()
    spread.ravel()[band] = pred_u8.ravel()[nearest_indices(band, nearest, gt.shape[1])]
    # blurred in strips of rows (small buffers, reused), over the object's box grown by the band; min(EA, E)
    # summed over every pixel of the strip, without selecting the object's: elsewhere it is min(EA >= 0, 0) = 0
    rows, cols = _object_box(gt, BAND)
    g = _gauss_1d()
    ew_fg = 0.0
    for top in range(rows.start, rows.stop, _STRIP):
        bottom = min(top + _STRIP, rows.stop)
        first, last = max(top - BAND, rows.start), min(bottom + BAND, rows.stop)  # the rows the blur reads
        EA = cv2.sepFilter2D(
            cv2.LUT(spread[first:last, cols], error_in), cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT
        )
        E = cv2.LUT(own[top:bottom, cols], error_in)
        ew_fg += float(cv2.min(EA[top - first : bottom - first], E).sum())
    fg = int(lv.fg.sum())
    # outside it is E with importance B = 2 - 0.5^(d / 5), d the Euclidean distance to the object
    fpw = _weighted_false_positives(pred_u8, gt, lv)
    tpw = fg - ew_fg
    R = 1 - ew_fg / fg
    P = tpw / (tpw + fpw + EPS)
    return float((1 + beta) * R * P / (R + beta * P + EPS))


def _weighted_false_positives(pred_u8: np.ndarray, gt: np.ndarray, lv: _Levels) -> float:
    """The sum over background pixels of E * (2 - 0.5^(d / 5))."""
    erring = int(np.argmax(lv.values > 0))  # the lowest level with an error outside the object
    if not lv.values[erring] > 0 or not lv.bg[erring:].any():
        return 0.0
    # each term is 2 E plus E (importance - 2): the first summed from the level histogram; the second is 0 where
    # the error is (levels below `erring`) and where the importance is exactly 2.0 (beyond the saturation
    # margin), so it is summed over a box that holds every other background pixel and the whole object (so
    # that the distances within it are the whole image's)
    total = 2 * float(np.dot(lv.bg, lv.values))
    rows, cols = _erring_box(pred_u8, gt, erring)
    dist = object_distances(gt, rows, cols)
    # summed over every pixel of the box, without selecting the erring ones (a gather costs more than the
    # products it saves): importance - 2 is taken as 0 on the object and the error is 0 at the lowest level, so
    # those terms add exact zeros; in strips of 2^18 pixels, whose buffers (2 MiB of float64) stay in the cache
    strip = max(1, (1 << 18) // dist.shape[1])
    for top in range(0, dist.shape[0], strip):
        d = dist[top : top + strip]
        squared = cv2.multiply(d, d, dtype=cv2.CV_32S)  # rounded to the nearest integer: d^2 (see object_distances)
        excess = _EXCESS.take(squared, mode="clip")  # d^2 past the table: 0, its last entry
        error = cv2.LUT(pred_u8[rows, cols][top : top + strip], lv.values)
        # einsum's own loop, not BLAS's: OpenBLAS splits a dot this long over its threads, which then spin and
        # take the core another worker needs (2M pixels: 0.7 ms on one thread, 4-8 ms on two of a busy machine)
        total += float(np.einsum("i,i->", error.ravel(), excess.ravel()))
    return total


def _erring_box(pred_u8: np.ndarray, gt: np.ndarray, erring: int) -> tuple[slice, slice]:
    """The rows and columns of the smallest box that holds the object and every pixel at level ``erring`` or
    above, cut to the object's box grown by the saturation margin (which holds the object too)."""
    near_rows, near_cols = _object_box(gt, _SATURATION_MARGIN)
    object_rows, object_cols = _object_box(gt, 0)
    box = []
    for axis, near, on_object in ((1, near_rows, object_rows), (0, near_cols, object_cols)):
        erring_at = np.flatnonzero(cv2.reduce(pred_u8, axis, cv2.REDUCE_MAX).ravel() >= erring)
        start = min(erring_at[0], on_object.start) if erring_at.size else on_object.start
        stop = max(erring_at[-1] + 1, on_object.stop) if erring_at.size else on_object.stop
        box.append(slice(max(start, near.start), min(stop, near.stop)))
    return box[0], box[1]


def object_distances(gt: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """(h, w) float32: the Euclidean distance from each pixel of the box ``gt[rows, cols]`` to the nearest object
    pixel of ``gt`` ((H, W) bool), for a box that holds the whole object (so that the nearest object pixel of
    every pixel there is in the box); 0 on the object.

    OpenCV's exact distance transform in float32, whose square rounds to the integer d^2 wherever the importance
    is not yet 2.0, as the whole image's transform there (both checked against scipy in the tests).
    """
    return cv2.distanceTransform((~gt[rows, cols]).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


# ---------------------------------------------------------------------------------------------------- HCE


def hce(pred: np.ndarray, gt: np.ndarray, gt_skeleton: np.ndarray) -> int:
    """Human correction effort (Qin et al. 2022): polygon control points plus independent regions needed to fix
    the false positives and false negatives. ``pred``, ``gt``: (H, W) bool, binarised at > 128."""
    p, g, skeleton = (np.ascontiguousarray(a, dtype=bool).view(np.uint8) for a in (pred, gt, gt_skeleton))
    tp = cv2.bitwise_and(p, g)
    fp = cv2.subtract(p, g)
    fn = cv2.subtract(g, p)
    eroded = cv2.erode(cv2.bitwise_or(p, g), _CROSS, iterations=RELAX)
    fp_ = cv2.bitwise_and(fp, eroded)
    for _ in range(RELAX):
        fp_ = cv2.subtract(cv2.dilate(fp_, _CROSS), g)
    fp_ = cv2.bitwise_and(fp, fp_)
    fn_ = cv2.bitwise_and(fn, eroded)
    for _ in range(RELAX):
        fn_ = cv2.subtract(cv2.dilate(fn_, _CROSS), p)
    fn_ = cv2.bitwise_or(cv2.bitwise_and(fn, fn_), cv2.subtract(skeleton, tp))

    bounds_fp, indep_fp = _conditional_boundaries(fp_, cv2.bitwise_or(tp, fn_))
    outside = cv2.bitwise_xor(cv2.bitwise_or(cv2.bitwise_or(tp, fp_), fn_), 1)
    bounds_fn, indep_fn = _conditional_boundaries(fn_, outside)
    return int(_control_points(bounds_fp) + _control_points(bounds_fn) + indep_fp + indep_fn)


def _control_points(boundaries: list[np.ndarray]) -> int:
    """Vertices of the boundaries simplified by Ramer-Douglas-Peucker (epsilon 2.0), as OpenCV counts them."""
    # a stretch of one or two points keeps them all: skip OpenCV's call for those
    approx = cv2.approxPolyDP
    return sum(n if (n := len(b)) <= 2 else len(approx(b, HCE_EPSILON, False)) for b in boundaries)


def _region_of_contour(hierarchy: np.ndarray) -> np.ndarray:
    """For each contour of ``cv2.findContours(..., RETR_TREE)``, the index of its region's outer contour.

    Outer contours and hole contours alternate with nesting depth (an island in a hole is a region of its
    own), and every 8-connected region has exactly one outer contour: a hole's region is its parent's.
    """
    parent = hierarchy[0][:, 3]
    depth = np.zeros(len(parent), np.int64)
    ancestor = parent.copy()
    while (ancestor >= 0).any():
        depth += ancestor >= 0
        ancestor = np.where(ancestor >= 0, parent[ancestor], -1)
    return np.where(depth % 2 == 1, parent, np.arange(len(parent)))


def _conditional_boundaries(mask: np.ndarray, condition: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The contour stretches of ``mask`` that touch ``condition`` (dilated), each pixel counted once, and the
    number of regions of ``mask`` with no such stretch: the DIS protocol's boundary filter, vectorised.

    A contour point is kept when its pixel touches the condition and it is that pixel's first appearance
    among all contours (in OpenCV's order); stretches of consecutive kept points form boundaries, and a
    contour's last stretch absorbs its first (reversed) when their ends are 8-neighbours. A region needs no
    boundary when none of its contours (its outer one and its holes') keeps a point.
    """
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return [], 0
    region = _region_of_contour(hierarchy)
    W = mask.shape[1]
    lengths = np.array([len(c) for c in contours])
    pts = np.concatenate(contours)[:, 0, :]  # (N, 2) as (col, row)
    pix = pts[:, 1].astype(np.int64) * W + pts[:, 0]
    order = np.arange(len(pix), dtype=np.int32)
    stamp = np.empty(mask.size, np.int32)
    stamp[pix[::-1]] = order[::-1]  # the last write wins: each pixel keeps its first point
    keep = (cv2.dilate(condition, _CROSS).ravel()[pix] > 0) & (stamp[pix] == order)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    contour_of_point = np.repeat(np.arange(len(contours)), lengths)
    touched = np.zeros(len(contours), bool)
    touched[region[contour_of_point[keep]]] = True
    independent = np.count_nonzero(region == np.arange(len(region))) - np.count_nonzero(touched)

    # stretches of kept points within each contour: starts and ends over all contours at once
    breaks = np.zeros(len(pix) + 1, bool)
    breaks[starts] = True
    breaks[-1] = True
    k = np.concatenate([keep, [False]])
    run_start = np.flatnonzero(k & (breaks | ~np.concatenate([[False], k[:-1]])))
    run_end = np.flatnonzero(k[:-1] & (breaks[1:] | ~k[1:])) + 1
    if not run_start.size:
        return [], int(independent)
    boundaries = [pts[a:b] for a, b in zip(run_start, run_end)]
    # a contour's last stretch absorbs its first when their ends are 8-neighbours (not the same pixel)
    contour_of_run = contour_of_point[run_start]
    first = np.flatnonzero(np.diff(contour_of_run, prepend=-1) != 0)
    last = np.append(first[1:], len(run_start)) - 1
    joined = (last > first) & (np.abs(pts[run_start[first]] - pts[run_end[last] - 1]).max(axis=1) == 1)
    for head, tail in zip(first[joined], last[joined]):
        boundaries[tail] = np.concatenate([boundaries[tail], boundaries[head][::-1]])
        boundaries[head] = None
    return [b[:, None, :] for b in boundaries if b is not None], int(independent)  # int32 (N, 1, 2), as OpenCV's


# --------------------------------------------------------------------------------------------------- image


def score_image(pred_u8: np.ndarray, gt_u8: np.ndarray, mask_data: MaskData, name: str = "") -> ImageScores:
    """Every metric of one image: ``pred_u8`` (H, W) uint8 and ``gt_u8`` its (H, W) uint8 mask, or the mask
    already binarised ((H, W) bool, as :meth:`MaskCache.read` gives it)."""
    gt = gt_u8 if gt_u8.dtype == bool else gt_u8 > 128
    lv = _levels(pred_u8, gt)
    precision, recall, fm, em = _curves(lv)
    adp_fm, adp_em = _adaptive_scores(lv, pred_u8)
    return ImageScores(
        precision=precision,
        recall=recall,
        fm_curve=fm,
        em_curve=em,
        adp_fm=float(adp_fm),
        adp_em=float(adp_em),
        wfm=_weighted_f(pred_u8, gt, mask_data.band, mask_data.nearest, lv),
        mae=_mean_absolute_error(lv),
        sm=_s_measure(lv),
        hce=float(hce(pred_u8 > 128, gt, mask_data.skeleton)),
        name=name,
        # Boundary IoU thresholds the levels the F-measure curves count (see .boundary)
        extra={
            "biou": boundary_iou_curve(
                cv2.LUT(pred_u8, (lv.values * 255).astype(np.uint8)), gt, gt_boundary=mask_data.boundary
            )
        },
    )


def summarize(scores: list[ImageScores]) -> dict[str, float]:
    """Dataset-level numbers from per-image scores."""
    if not scores:
        raise ValueError("no images to summarise")
    fm = np.mean([s.fm_curve for s in scores], axis=0)
    em = np.mean([s.em_curve for s in scores], axis=0)
    p = np.mean([s.precision for s in scores], axis=0)
    r = np.mean([s.recall for s in scores], axis=0)
    num = (1 + BETA2) * p * r
    fm_pr = num / np.where(num == 0, 1, BETA2 * p + r)
    return {
        "maxFm": float(fm.max()),
        "meanFm": float(fm.mean()),
        "adpFm": float(np.mean([s.adp_fm for s in scores])),
        "maxFm_pr": float(fm_pr.max()),
        "wFm": float(np.mean([s.wfm for s in scores])),
        "MAE": float(np.mean([s.mae for s in scores])),
        "Sm": float(np.mean([s.sm for s in scores])),
        "meanEm": float(em.mean()),
        "maxEm": float(em.max()),
        "adpEm": float(np.mean([s.adp_em for s in scores])),
        "HCE": float(np.mean([s.hce for s in scores])),
        **summarize_boundary([s.extra["biou"] for s in scores]),
        "n": len(scores),
    }
