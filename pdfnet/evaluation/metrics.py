"""The DIS metrics, numerically equal to pysodmetrics (and, for HCE, to the DIS protocol) but much faster.

Conventions (pysodmetrics'): a prediction is an 8-bit map, divided by 255 and min-max normalised per image; a
mask is binarised at > 128. F-measure uses beta^2 = 0.3 at 256 thresholds (prediction >= t); ``maxFm`` and
``meanFm`` are the maximum and mean of the mean per-image F curve (the DIS and BiRefNet convention),
``maxFm_pr`` the maximum of F computed from the mean precision and recall curves (the PDFNet code's
convention); weighted F uses beta = 1; S-measure alpha = 0.5; E-measure curve mean and max; adaptive F and E
threshold at twice the mean prediction. HCE follows the DIS protocol: prediction and mask binarised at raw
value > 128, relax 5, polygon tolerance 2.0, mask skeleton from scikit-image. Boundary IoU (``maxBIoU``,
``meanBIoU``) is BiRefNet's: see :mod:`pdfnet.evaluation.boundary`.

What costs time is done once per mask and cached (see :class:`MaskCache`): the skeleton HCE needs and the
nearest-foreground offsets weighted F needs near the object.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..io import atomic_path
from .boundary import boundary_iou_curve, summarize_boundary

EPS = np.spacing(1)  # MATLAB's eps, as pysodmetrics
BETA2 = 0.3
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # skimage.morphology.disk(1), the DIS kernel
RELAX, HCE_EPSILON = 5, 2.0
BAND = 3  # weighted F blurs with a 7x7 kernel: background pixels within 3 of the object matter
_OFFSET = 4  # their nearest object pixel lies within 3 * sqrt(2) < 5, i.e. offsets in [-4, 4]


# ------------------------------------------------------------------------------------------ per mask, cached


@dataclass
class MaskData:
    """What the metrics need of one mask besides the mask itself.

    Attributes:
        skeleton: (H, W) bool, scikit-image's skeleton of the binarised mask.
        band_codes: (H, W) int8; for background pixels within 3 (Chebyshev) of the object, the offset of their
            nearest object pixel as scipy's Euclidean feature transform picks it, coded (dy + 4) * 9 + dx + 5;
            0 elsewhere.
    """

    skeleton: np.ndarray
    band_codes: np.ndarray


def compute_mask_data(gt: np.ndarray) -> MaskData:
    """The expensive, mask-only part of HCE and weighted F. ``gt``: (H, W) bool."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    skeleton = skeletonize(gt).astype(bool)
    codes = np.zeros(gt.shape, np.int8)
    if gt.any() and not gt.all():
        band = (cv2.dilate(gt.astype(np.uint8), np.ones((2 * BAND + 1,) * 2, np.uint8)) > 0) & ~gt
        _, (iy, ix) = distance_transform_edt(~gt, return_indices=True)
        ys, xs = np.nonzero(band)
        dy, dx = iy[ys, xs] - ys, ix[ys, xs] - xs
        codes[ys, xs] = (dy + _OFFSET) * (2 * _OFFSET + 1) + dx + _OFFSET + 1
    return MaskData(skeleton, codes)


class MaskCache:
    """Mask-derived data on disk, keyed by the mask file's content, so a second evaluation skips it.

    Args:
        folder: where the cache lives (created); None keeps nothing.
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, gt_path: str | os.PathLike, gt: np.ndarray) -> MaskData:
        if self.folder is None:
            return compute_mask_data(gt)
        key = hashlib.sha1(Path(gt_path).read_bytes()).hexdigest()
        path = self.folder / f"{key}.npz"
        if path.exists():
            try:
                with np.load(path) as f:
                    shape = tuple(f["shape"])
                    skeleton = np.unpackbits(f["skeleton"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
                    return MaskData(skeleton, f["band_codes"])
            except (OSError, ValueError, KeyError):  # a damaged entry is recomputed
                pass
        data = compute_mask_data(gt)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, shape=np.array(gt.shape), skeleton=np.packbits(data.skeleton), band_codes=data.band_codes
            )
        return data


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


def prepare(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 prediction and mask -> float64 prediction in [0, 1] (min-max normalised) and bool mask (> 128)."""
    gt_bool = gt > 128
    p = pred / 255.0
    lo, hi = p.min(), p.max()
    if hi != lo:
        p = (p - lo) / (hi - lo)
    return p, gt_bool


def curves(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F and E curves from one joint histogram of (level, mask)."""
    bg_hist, fg_hist = level_histograms((pred * 255).astype(np.uint8), gt)
    tp = np.cumsum(fg_hist[::-1])  # predicted foreground at thresholds 255 .. 0, inside the mask
    fp = np.cumsum(bg_hist[::-1])
    positives = tp + fp
    gt_fg, size = int(fg_hist.sum()), gt.size
    precision = tp / np.where(positives == 0, 1, positives)
    recall = tp / max(gt_fg, 1)
    num = (1 + BETA2) * precision * recall
    fm = num / np.where(num == 0, 1, BETA2 * precision + recall)
    em = _enhanced_alignment(tp, fp, gt_fg, size)
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


def adaptive_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """F and E of the prediction binarised at min(2 mean, 1)."""
    binary = pred >= min(2 * pred.mean(), 1)
    tp = int(np.count_nonzero(binary & gt))
    fp = int(np.count_nonzero(binary)) - tp
    gt_fg = int(np.count_nonzero(gt))
    if tp == 0:
        fm = 0.0
    else:
        pre, rec = tp / (tp + fp), tp / gt_fg
        fm = (1 + BETA2) * pre * rec / (BETA2 * pre + rec)
    em = float(_enhanced_alignment(np.array(tp), np.array(fp), gt_fg, gt.size))
    return fm, em


def level_values(pred_u8: np.ndarray) -> np.ndarray:
    """(256,) the normalised prediction value of each 8-bit level, computed as :func:`prepare` computes it per
    pixel, so that sums over level histograms equal sums over pixels."""
    levels = np.arange(256) / 255.0
    lo, hi = pred_u8.min() / 255.0, pred_u8.max() / 255.0
    return (levels - lo) / (hi - lo) if hi != lo else levels


def level_histograms(pred_u8: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts per 8-bit level outside (first) and inside (second) the mask."""
    hist = np.bincount(pred_u8.ravel().astype(np.int64) + 256 * gt.ravel(), minlength=512)
    return hist[:256], hist[256:]


def mean_absolute_error(pred_u8: np.ndarray, gt: np.ndarray) -> float:
    """mean |prediction - mask| of the normalised prediction, from its level histograms."""
    values = level_values(pred_u8)
    bg_hist, fg_hist = level_histograms(pred_u8, gt)
    return float((np.dot(bg_hist, values) + np.dot(fg_hist, 1 - values)) / gt.size)


def s_measure(pred_u8: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017): object and region similarity.

    pysodmetrics' formulas, evaluated on histograms of the 256 prediction levels instead of pixel arrays
    (the prediction takes only those values).
    """
    values = level_values(pred_u8)
    bg_hist, fg_hist = level_histograms(pred_u8, gt)
    size, n_fg = gt.size, int(fg_hist.sum())
    y = n_fg / size
    if n_fg == 0:
        return float(1 - np.dot(bg_hist, values) / size)
    if n_fg == size:
        return float(np.dot(fg_hist, values) / size)
    object_score = _s_object(fg_hist, values) * y + _s_object(bg_hist, 1 - values) * (1 - y)
    return float(max(0.0, alpha * object_score + (1 - alpha) * _region(pred_u8, gt, values)))


def _s_object(counts: np.ndarray, values: np.ndarray) -> float:
    """Object similarity of the pixels counted in ``counts`` (per level) taking ``values``."""
    n = counts.sum()
    mean = np.dot(counts, values) / n
    std = np.sqrt(np.dot(counts, (values - mean) ** 2) / (n - 1)) if n > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _region(pred_u8: np.ndarray, gt: np.ndarray, values: np.ndarray) -> float:
    h, w = gt.shape
    area = h * w
    count = np.count_nonzero(gt)
    # centroid of the object; sums of integer coordinates are exact in float64, as argwhere().mean()
    cy = np.round(np.dot(np.count_nonzero(gt, axis=1), np.arange(h)) / count)
    cx = np.round(np.dot(np.count_nonzero(gt, axis=0), np.arange(w)) / count)
    cy, cx = int(cy) + 1, int(cx) + 1
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    quadrants = ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)))
    quadrants += ((slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w)))
    scores = [_ssim(*level_histograms(pred_u8[q], gt[q]), values) for q in quadrants]
    return scores[0] * w_lt + scores[1] * w_rt + scores[2] * w_lb + scores[3] * w_rb


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


def _gauss_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    # fspecial('gaussian', 7, 5) is the outer product of this vector with itself (no tail is cut at sigma 5)
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def weighted_f(pred: np.ndarray, gt: np.ndarray, band_codes: np.ndarray, beta: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014) as pysodmetrics computes it; ``band_codes`` from
    :func:`compute_mask_data`."""
    if not gt.any():
        return 0.0
    E = np.abs(pred - gt)
    Et = E.copy()
    ys, xs = np.nonzero(band_codes)
    codes = band_codes[ys, xs].astype(np.int64) - 1
    Et[ys, xs] = E[ys + codes // (2 * _OFFSET + 1) - _OFFSET, xs + codes % (2 * _OFFSET + 1) - _OFFSET]
    g = _gauss_1d()
    EA = cv2.sepFilter2D(Et, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)
    # inside the object the error is min(E, EA) with importance 1; outside it is E with importance
    # B = 2 - 0.5^(d / 5), d the distance to the object (exact Euclidean, float32), which is 1 inside (d = 0)
    ew_fg = np.minimum(EA[gt], E[gt])
    dist = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    erring = (E > 0) & ~gt  # only background pixels with an error contribute
    fpw = float(np.dot(E[erring], 2 - np.exp((np.log(0.5) / 5) * dist[erring].astype(np.float64))))
    fg = ew_fg.size
    tpw = fg - ew_fg.sum()
    R = 1 - ew_fg.sum() / fg
    P = tpw / (tpw + fpw + EPS)
    return float((1 + beta) * R * P / (R + beta * P + EPS))


# ---------------------------------------------------------------------------------------------------- HCE


def hce(pred: np.ndarray, gt: np.ndarray, gt_skeleton: np.ndarray) -> int:
    """Human correction effort (Qin et al. 2022): polygon control points plus independent regions needed to fix
    the false positives and false negatives. ``pred``, ``gt``: (H, W) bool, binarised at > 128."""
    union = gt | pred
    tp = gt & pred
    fp = pred ^ tp
    fn = gt ^ tp
    eroded = cv2.erode(union.astype(np.uint8), _CROSS, iterations=RELAX)
    fp_ = fp & (eroded > 0)
    for _ in range(RELAX):
        fp_ = (cv2.dilate(fp_.astype(np.uint8), _CROSS) > 0) & ~gt
    fp_ = fp & fp_
    fn_ = fn & (eroded > 0)
    for _ in range(RELAX):
        fn_ = (cv2.dilate(fn_.astype(np.uint8), _CROSS) > 0) & ~pred
    fn_ = fn & fn_
    fn_ = fn_ | (gt_skeleton ^ (tp & gt_skeleton))

    contours_fp, _ = cv2.findContours(fp_.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    bounds_fp, indep_fp = _conditional_boundaries(contours_fp, fp_, tp | fn_)
    contours_fn, _ = cv2.findContours(fn_.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    bounds_fn, indep_fn = _conditional_boundaries(contours_fn, fn_, ~(tp | fp_ | fn_))
    points = sum(len(cv2.approxPolyDP(b, HCE_EPSILON, False)) for b in bounds_fp + bounds_fn)
    return int(points + indep_fp + indep_fn)


def _conditional_boundaries(contours, mask: np.ndarray, condition: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The contour stretches that touch ``condition`` (dilated), each pixel counted once, and the number of
    regions of ``mask`` with no such stretch: the DIS protocol's boundary filter, vectorised.

    A contour point is kept when its pixel touches the condition and it is that pixel's first appearance
    among all contours (in order); stretches of consecutive kept points form boundaries, and a contour's last
    stretch absorbs its first (reversed) when their ends are 8-neighbours.
    """
    n_labels, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if not contours:
        return [], n_labels - 1
    H, W = mask.shape
    cond = cv2.dilate(condition.astype(np.uint8), _CROSS).ravel() > 0
    lengths = np.array([len(c) for c in contours])
    pts = np.concatenate(contours)[:, 0, :]  # (N, 2) as (col, row)
    pix = pts[:, 1].astype(np.int64) * W + pts[:, 0]
    first = np.zeros(len(pix), bool)
    first[np.unique(pix, return_index=True)[1]] = True
    keep = cond[pix] & first
    touched = np.unique(labels.ravel()[pix[keep]])
    independent = (n_labels - 1) - np.count_nonzero(touched)

    ends = np.cumsum(lengths)
    starts = ends - lengths
    boundaries = []
    for s, e in zip(starts, ends):
        k = keep[s:e]
        if not k.any():
            continue
        edges = np.diff(np.concatenate([[0], k.astype(np.int8), [0]]))
        run_starts, run_ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        runs = [pts[s + a : s + b] for a, b in zip(run_starts, run_ends)]
        if len(runs) > 1:
            d = np.abs(runs[0][0] - runs[-1][-1])
            if d.max() == 1:  # 8-neighbours, not the same pixel
                runs[-1] = np.concatenate([runs[-1], runs[0][::-1]])
                del runs[0]
        boundaries.extend(r[:, None, :].astype(np.int32) for r in runs)
    return boundaries, int(independent)


# --------------------------------------------------------------------------------------------------- image


def score_image(pred_u8: np.ndarray, gt_u8: np.ndarray, mask_data: MaskData, name: str = "") -> ImageScores:
    """Every metric of one image: ``pred_u8`` and ``gt_u8`` (H, W) uint8 of the same size."""
    pred, gt = prepare(pred_u8, gt_u8)
    precision, recall, fm, em = curves(pred, gt)
    levels = cv2.LUT(pred_u8, (level_values(pred_u8) * 255).astype(np.uint8))  # the levels the curves count
    adp_fm, adp_em = adaptive_scores(pred, gt)
    return ImageScores(
        precision=precision,
        recall=recall,
        fm_curve=fm,
        em_curve=em,
        adp_fm=float(adp_fm),
        adp_em=float(adp_em),
        wfm=weighted_f(pred, gt, mask_data.band_codes),
        mae=mean_absolute_error(pred_u8, gt),
        sm=s_measure(pred_u8, gt),
        hce=float(hce(pred_u8 > 128, gt, mask_data.skeleton)),
        name=name,
        extra={"biou": boundary_iou_curve(levels, gt)},
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
