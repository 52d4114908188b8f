"""The exact shortcuts behind the fast metrics, each against the library computation it replaces, on masks
chosen to break them: objects touching the border, empty and full masks, one-pixel structures, ties."""

import warnings

import cv2
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from skimage.morphology import skeletonize as skimage_skeletonize
from test_metrics import synthetic_pair

from pdfnet.evaluation import metrics
from pdfnet.evaluation.geometry import decode_offset, encode_offset, nearest_object_codes, skeletonize

py_sod_metrics = pytest.importorskip("py_sod_metrics")


def adversarial_masks() -> list[np.ndarray]:
    """Small masks that stress borders, ties and thin or empty structures."""
    rng = np.random.default_rng(7)
    masks = [np.zeros((9, 11), bool), np.ones((9, 11), bool), np.ones((1, 1), bool), np.zeros((1, 5), bool)]
    dot = np.zeros((15, 17), bool)
    dot[7, 8] = True  # one pixel
    corner = np.zeros((12, 12), bool)
    corner[0, 0] = corner[11, 11] = True  # pixels on the border
    frame = np.ones((10, 14), bool)
    frame[3:-3, 3:-3] = False  # a ring touching every border
    stairs = np.eye(20, dtype=bool) | np.eye(20, k=1, dtype=bool)  # a 2-pixel diagonal band
    checker = (np.indices((16, 16)).sum(0) % 2).astype(bool)  # every pixel a tie
    lines = np.zeros((40, 60), np.uint8)
    cv2.line(lines, (0, 0), (59, 39), 1, 1)
    cv2.line(lines, (0, 39), (59, 5), 1, 2)
    cv2.line(lines, (30, 0), (30, 39), 1, 3)
    masks += [dot, corner, frame, stairs, checker, lines.astype(bool)]
    for density in (0.02, 0.2, 0.5, 0.8, 0.97):  # random masks, raw and grown into blobs
        raw = rng.random((int(rng.integers(5, 45)), int(rng.integers(5, 45)))) < density
        masks += [raw, cv2.dilate(raw.view(np.uint8), np.ones((2, 3), np.uint8)).astype(bool)]
    return masks


def test_skeleton_equals_scikit_image():
    masks = adversarial_masks() + [synthetic_pair(seed, 120, 150)[1] > 128 for seed in range(4)]
    for mask in masks:
        assert np.array_equal(skeletonize(mask), skimage_skeletonize(mask)), mask.shape


def test_skeleton_of_a_dis_sized_mask():
    # thick blobs (hundreds of thinning passes) crossed by thin lines, on a 768x1024 mask
    gt = synthetic_pair(11, 768, 1024)[1]
    blobs = np.zeros_like(gt)
    cv2.ellipse(blobs, (500, 380), (300, 200), 30, 0, 360, 255, -1)
    mask = (gt | blobs) > 128
    assert np.array_equal(skeletonize(mask), skimage_skeletonize(mask))


def scipy_codes(mask: np.ndarray) -> np.ndarray:
    """The offsets to the nearest object pixel that scipy's feature transform names, in the band, coded."""
    codes = np.zeros(mask.shape, np.int8)
    if not mask.any() or mask.all():
        return codes
    band = cv2.dilate(mask.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
    _, (iy, ix) = distance_transform_edt(~mask, return_indices=True)
    ys, xs = np.nonzero(band)
    codes[ys, xs] = encode_offset(iy[ys, xs] - ys, ix[ys, xs] - xs)
    return codes


def test_nearest_object_offsets_equal_scipy():
    rng = np.random.default_rng(3)
    sparse = [rng.random((40, 50)) < p for p in (0.003, 0.01, 0.03)]  # far-apart pixels: many equal distances
    for mask in adversarial_masks() + sparse + [synthetic_pair(5, 96, 128)[1] > 128]:
        codes = nearest_object_codes(mask)
        assert np.array_equal(codes, scipy_codes(mask)), mask.shape
        ys, xs = np.nonzero(codes)
        dy, dx = decode_offset(codes[ys, xs])
        assert mask[ys + dy, xs + dx].all()  # they point at object pixels


def stock_wfm(pred: np.ndarray, gt: np.ndarray) -> float:
    m = py_sod_metrics.WeightedFmeasure()
    m.step(pred, gt)
    return m.get_results()["wfm"]


def test_weighted_f_box_and_distances_equal_pysodmetrics():
    rng = np.random.default_rng(1)
    cases = []
    for mask in adversarial_masks():
        pred = rng.integers(0, 256, mask.shape).astype(np.uint8)
        cases += [(pred, mask), (np.where(mask, 255, 0).astype(np.uint8), mask)]  # noisy and perfect
    far = np.zeros((300, 420), bool)
    far[0, 0] = True  # distances up to 520: past the one (265) where the importance becomes exactly 2.0
    cases.append((rng.integers(0, 256, far.shape).astype(np.uint8), far))
    quiet = np.zeros((60, 80), np.uint8)
    quiet[20:30, 30:50] = 200  # the background at the lowest level: no background error, no distances
    cases.append((quiet, quiet > 100))
    for pred, mask in cases:
        ours = metrics.weighted_f(pred, mask, nearest_object_codes(mask))
        assert ours == pytest.approx(stock_wfm(pred, mask.astype(np.uint8) * 255), rel=1e-12, abs=1e-15)


def test_importance_from_opencv_distances_equals_scipys():
    # OpenCV's float32 distance squares back to scipy's exact d^2 wherever the importance is not yet 2.0
    rng = np.random.default_rng(2)
    mask = rng.random((700, 900)) < 2e-5
    mask[0, 0] = True
    exact = distance_transform_edt(~mask)
    dist = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    squared = cv2.min(cv2.multiply(dist, dist), float(metrics._IMPORTANCE.size - 1))
    ours = metrics._IMPORTANCE[(squared + 0.5).astype(np.int32)]
    expected = np.where(mask, 0.0, 2 - np.exp(np.log(0.5) / 5 * exact))
    assert exact.max() > 265 and np.array_equal(ours, expected)


def stock_hce(pred: np.ndarray, gt: np.ndarray) -> float:
    m = py_sod_metrics.HumanCorrectionEffortMeasure()
    m.step(pred.astype(np.float64), gt, normalize=False)
    return m.get_results()["hce"]


def test_hce_equals_pysodmetrics_on_adversarial_masks():
    rng = np.random.default_rng(4)
    for mask in adversarial_masks():
        specks = rng.random(mask.shape) < 0.05  # one-pixel false positives and negatives everywhere
        for pred in (mask, ~mask, mask ^ specks, np.zeros_like(mask), np.ones_like(mask)):
            skeleton = metrics.compute_mask_data(mask).skeleton
            assert metrics.hce(pred, mask, skeleton) == stock_hce(pred, mask), mask.shape


def test_adaptive_threshold_on_a_level_value():
    # c pixels at level k, one at 255, the rest at 0, with n - 2c = 510 / k: twice the mean is exactly k's
    # value, and which side of it the rounded mean falls on rests on how it is summed (these sizes split a
    # sum over levels from pysodmetrics' sum over pixels)
    for k, rows in ((2, 27), (3, 20), (2, 139), (3, 76)):
        n = rows * 101
        pred = np.zeros(n, np.uint8)
        pred[: (n - 510 // k) // 2] = k
        pred[-1] = 255
        pred = pred.reshape(rows, 101)
        gt = np.zeros_like(pred)
        gt[: rows // 2] = 255
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm, em = py_sod_metrics.Fmeasure(), py_sod_metrics.Emeasure()
        fm.step(pred, gt)
        em.step(pred, gt)
        scores = metrics.score_image(pred, gt, metrics.compute_mask_data(gt > 128))
        assert scores.adp_fm == pytest.approx(fm.get_results()["fm"]["adp"], abs=1e-12)
        assert scores.adp_em == pytest.approx(em.get_results()["em"]["adp"], abs=1e-12)


def test_histograms_count_exactly_past_float32():
    # OpenCV counts in float32; more than 2^24 pixels of one level must still count exactly
    image = np.zeros((4200, 4100), np.uint8)
    image[0, 0] = 3
    counts = metrics.histogram(image)
    assert counts[0] == image.size - 1 and counts[3] == 1 and counts.dtype == np.int64


def test_png_fast_path_reads_what_pillow_reads(tmp_path):
    from PIL import Image

    from pdfnet.evaluation.folders import read_map
    from pdfnet.io import read_gray

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    writers = {
        "grey.png": lambda p: Image.fromarray(a).save(p),  # the fast path
        "grey_opencv.png": lambda p: cv2.imwrite(str(p), a),
        "transparent.png": lambda p: Image.fromarray(a).save(p, transparency=7),
        "rgb.png": lambda p: Image.fromarray(np.dstack([a, a[::-1], a])).save(p),  # the others: Pillow
        "palette.png": lambda p: Image.fromarray(a).convert("P").save(p),
        "alpha.png": lambda p: Image.fromarray(a).convert("LA").save(p),
        "one_bit.png": lambda p: Image.fromarray(a > 128).save(p),
        "sixteen_bit.png": lambda p: cv2.imwrite(str(p), a.astype(np.uint16) * 257),
        "photo.jpg": lambda p: Image.fromarray(a).save(p),
    }
    for name, write in writers.items():
        write(tmp_path / name)
        assert np.array_equal(read_map(tmp_path / name), read_gray(tmp_path / name)), name
