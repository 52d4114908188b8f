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


def test_level_histograms_count_exactly_past_float32():
    image = np.zeros((4200, 4100), np.uint8)
    image[0, 0] = 3
    mask = np.zeros(image.shape, bool)
    mask[:, :2] = True  # 8400 pixels inside, one of them at level 3
    outside, inside = metrics.level_histograms(image, mask)
    assert inside[0] == 8399 and inside[3] == 1 and outside[0] == image.size - 8400 and outside[3] == 0


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


def test_distances_over_a_box_equal_the_whole_images():
    # weighted F transforms only a box that holds the object: the squared distances there, as weighted F rounds
    # them, are the whole image's, and scipy's exact ones wherever the importance is not yet 2.0 (OpenCV's
    # float32 distances themselves may differ in the last bit: a box's sums are the whole image's, its rounding
    # of the square root not always)
    rng = np.random.default_rng(10)
    saturated = metrics._IMPORTANCE.size - 1
    corner, edge, middle = np.zeros((300, 400), bool), np.zeros((300, 400), bool), np.zeros((700, 900), bool)
    corner[:20, :30] = True
    edge[-1, 100:180] = edge[150:, 399] = True  # on the bottom and right borders
    middle[300:310, 400:412] = True
    masks = [corner, edge, middle, np.ones((50, 60), bool), rng.random((300, 400)) < 1e-3]
    masks += [m for m in adversarial_masks() if m.any()]

    def squared(mask, rows, cols):
        d = metrics.object_distances(mask, rows, cols)
        return cv2.multiply(d, d, dtype=cv2.CV_32S)  # rounded to the nearest integer, as weighted F does

    for mask in masks:
        whole = squared(mask, slice(None), slice(None))
        exact = np.rint(distance_transform_edt(~mask) ** 2)
        near = exact < saturated
        assert np.array_equal(whole[near], exact[near]) and (whole[~near] >= saturated).all(), mask.shape
        for margin in (0, 1, 7, 265):
            rows, cols = metrics._object_box(mask, margin)
            assert np.array_equal(squared(mask, rows, cols), whole[rows, cols]), (mask.shape, margin)


def reference_false_positives(pred: np.ndarray, mask: np.ndarray) -> float:
    """pysodmetrics' background terms, E (2 - 0.5^(d / 5)) with scipy's distance, summed over the whole image."""
    error = metrics.level_values(pred)[pred]
    importance = 2 - np.exp(np.log(0.5) / 5 * distance_transform_edt(~mask))
    return float(np.sum(np.where(mask, 0.0, error * importance)))


def test_background_importance_over_the_erring_box_equals_the_whole_images():
    # summed as 2 E from the histogram plus E (importance - 2) over the box that holds the object and the
    # erring pixels within the saturation margin: small objects in large images with errors near them, far
    # from them (importance exactly 2.0) or nowhere, objects on the border, constant predictions
    rng = np.random.default_rng(11)
    middle = np.zeros((700, 900), bool)
    middle[300:310, 400:412] = True
    ring = cv2.dilate(middle.view(np.uint8), np.ones((41, 41), np.uint8)).astype(bool) & ~middle
    near = np.where(ring, rng.integers(0, 256, middle.shape), np.where(middle, 255, 0)).astype(np.uint8)
    far = near.copy()
    far[0, 0] = far[699, 899] = far[5, 450] = 90  # beyond the margin of 265: importance 2.0
    corner = np.zeros((400, 500), bool)
    corner[:40, :25] = True
    noisy = rng.integers(0, 256, corner.shape).astype(np.uint8)
    cases = [(near, middle), (far, middle), (noisy, corner), (noisy, np.flipud(corner)), (noisy, middle[:400, :500])]
    cases += [(np.full(corner.shape, 7, np.uint8), corner)]  # constant: its levels are not normalised
    cases += [(np.where(middle, 200, 3).astype(np.uint8), middle)]  # the background all at the lowest level
    for pred, mask in cases:
        lv = metrics._levels(pred, mask)
        ours = metrics._weighted_false_positives(pred, mask, lv)
        assert ours == pytest.approx(reference_false_positives(pred, mask), rel=1e-13, abs=1e-15)
    rows, cols = metrics._erring_box(near, middle, 1)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (50, 52)  # the object and its 20-pixel ring
    rows, cols = metrics._erring_box(far, middle, 1)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (35, 575, 135, 677)  # cut at the margin
