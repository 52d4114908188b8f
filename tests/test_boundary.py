"""Boundary IoU as BiRefNet's evaluation computes it, against an implementation written here from its definition
(per threshold, with SciPy's filters instead of OpenCV's and no histograms), and against Cheng et al.'s
Boundary IoU of two masks where the prediction is binary."""

import numpy as np
import pytest
from scipy import ndimage

from pdfnet.evaluation.boundary import boundary_iou_curve, boundary_width, summarize_boundary
from pdfnet.evaluation.metrics import compute_mask_data, score_image, summarize


def reference_curve(pred_u8: np.ndarray, gt_u8: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """BiRefNet's curve from its definition: the min-max normalised prediction's 8-bit levels minus their
    minimum over a (2d + 1) square (zeros outside the image), thresholded at each t = 255 .. 0 (>= t), against
    the mask's boundary (its pixels within d, in the chessboard metric, of the outside or the image's edge)."""
    p = pred_u8 / 255.0
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    levels = (p * 255).astype(np.uint8).astype(np.int64)
    h, w = gt_u8.shape
    d = max(1, int(round(ratio * np.hypot(h, w))))
    gradient = levels - ndimage.minimum_filter(levels, size=2 * d + 1, mode="constant", cval=0)
    gt = gt_u8 > 128
    inside = ndimage.distance_transform_cdt(np.pad(gt, 1), metric="chessboard")[1:-1, 1:-1]
    gt_boundary = gt & (inside <= d)
    curve = []
    for t in range(255, -1, -1):
        predicted = gradient >= t
        union = np.count_nonzero(predicted | gt_boundary)
        curve.append(np.count_nonzero(predicted & gt_boundary) / max(union, 1))
    return np.array(curve)


def cheng_boundary_iou(pred: np.ndarray, gt: np.ndarray, ratio: float = 0.02) -> float:
    """Cheng et al.'s Boundary IoU of two bool masks: each mask's pixels within d of its outside (the image's
    edge included), IoU of the two."""
    d = max(1, int(round(ratio * np.hypot(*gt.shape))))

    def boundary(mask):
        eroded = ndimage.binary_erosion(np.pad(mask, 1), np.ones((3, 3)), iterations=d, border_value=0)[1:-1, 1:-1]
        return mask & ~eroded

    a, b = boundary(pred), boundary(gt)
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


def _pair(seed: int, h: int, w: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = ((yy - h * rng.uniform(0.3, 0.7)) ** 2 / (h / 3) ** 2 + (xx - w / 2) ** 2 / (w / 4) ** 2) < 1
    gt[: h // 5, : w // 6] = True  # a corner piece: the image's edge is boundary
    if kind == "binary":
        pred = np.roll(gt, rng.integers(1, 6), axis=1) * 255
    elif kind == "soft":
        pred = np.clip(ndimage.gaussian_filter(gt * 255.0, 2) + rng.normal(0, 25, (h, w)), 0, 255)
    else:  # a narrow range of levels: the min-max normalisation matters
        pred = 90 + gt * 30 + rng.integers(0, 12, (h, w))
    return pred.astype(np.uint8), (gt * 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["soft", "binary", "narrow"])
@pytest.mark.parametrize("shape", [(48, 64), (97, 61), (3, 40)])
def test_curve_matches_the_definition(kind, shape):
    pred, gt = _pair(sum(shape), *shape, kind)
    curve = score_image(pred, gt, compute_mask_data(gt > 128)).extra["biou"]
    np.testing.assert_allclose(curve, reference_curve(pred, gt), rtol=0, atol=1e-15)
    assert curve.shape == (256,) and 0 <= curve.min() and curve.max() <= 1


def test_binary_prediction_is_chengs_boundary_iou():
    pred, gt = _pair(1, 120, 90, "binary")
    curve = score_image(pred, gt, compute_mask_data(gt > 128)).extra["biou"]
    expected = cheng_boundary_iou(pred > 128, gt > 128)
    assert 0.05 < expected < 0.95  # neither trivial nor perfect
    np.testing.assert_allclose(curve[:255], expected, rtol=0, atol=1e-15)  # thresholds 255 .. 1
    # threshold 0 predicts every pixel: the mask's boundary over the image
    assert curve[255] == pytest.approx(np.count_nonzero(reference_boundary(gt > 128)) / gt.size)


def reference_boundary(gt: np.ndarray) -> np.ndarray:
    d = boundary_width(*gt.shape)
    return gt & (ndimage.distance_transform_cdt(np.pad(gt, 1), metric="chessboard")[1:-1, 1:-1] <= d)


def test_hand_built_square():
    # a 6x6 square in a 20x20 image: d = round(0.02 * 28.28) = 1, so its boundary is the 20-pixel outer ring
    gt = np.zeros((20, 20), bool)
    gt[5:11, 5:11] = True
    curve = boundary_iou_curve(gt.astype(np.uint8) * 255, gt)
    # the prediction is the mask: IoU 1 at thresholds 255 .. 1; at 0 every pixel is predicted: 20 / 400
    assert curve[:255].tolist() == [1.0] * 255 and curve[255] == 20 / 400
    # a prediction one pixel to the right: its ring shares 10 pixels with the mask's, the union is 30
    shifted = np.roll(gt, 1, axis=1).astype(np.uint8) * 255
    assert boundary_iou_curve(shifted, gt)[0] == pytest.approx(10 / 30)
    # an empty mask has no boundary: 0 everywhere
    assert boundary_iou_curve(shifted, np.zeros_like(gt)).max() == 0


def test_boundary_width():
    assert boundary_width(2048, 3072) == 74  # 0.02 * 3692.3 = 73.8
    assert boundary_width(100, 100) == 3  # 2.83
    assert boundary_width(10, 10) == 1  # 0.28 rounds to 0: at least 1
    # halves round to even, as Python's round in BiRefNet's code: 2.5 -> 2, 1.5 -> 2
    assert boundary_width(125, 0) == 2 and boundary_width(75, 0) == 2


def test_split_numbers_are_the_mean_curves_max_and_mean():
    pairs = [_pair(seed, 60, 80, kind) for seed, kind in enumerate(["soft", "binary", "narrow"])]
    scores = [score_image(p, g, compute_mask_data(g > 128)) for p, g in pairs]
    mean = np.mean([reference_curve(p, g) for p, g in pairs], axis=0)
    summary = summarize(scores)
    assert summary["maxBIoU"] == pytest.approx(mean.max(), abs=1e-15)
    assert summary["meanBIoU"] == pytest.approx(mean.mean(), abs=1e-15)
    assert summarize_boundary([s.extra["biou"] for s in scores]) == {
        "maxBIoU": summary["maxBIoU"],
        "meanBIoU": summary["meanBIoU"],
    }
    # the max of the mean curve, not the mean of the per-image maxima
    assert summary["maxBIoU"] <= np.mean([s.extra["biou"].max() for s in scores])


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (37, 53), (300, 451)])
def test_running_minima_erode_as_opencvs_square(shape):
    # the erosion by two running minima (log2 steps each) against cv2.erode by the whole square, with squares
    # from 3 pixels to wider than the image; and the mask's boundary (cached) against the definition
    import cv2

    from pdfnet.evaluation.boundary import inner_gradient, mask_boundary

    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape).astype(np.uint8)
    for d in (1, 2, 3, 5, 8, 74, 300):
        square = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
        eroded = cv2.erode(image, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        assert np.array_equal(inner_gradient(image, d), image - eroded), d
    gt = rng.random(shape) < 0.7
    assert np.array_equal(mask_boundary(gt), reference_boundary(gt))
