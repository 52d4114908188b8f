"""The metric suite against pysodmetrics (the field's reference implementation) and hand-worked masks."""

import warnings

import cv2
import numpy as np
import pytest

from pdfnet.evaluation.metrics import MaskCache, compute_mask_data, hce, score_image, summarize

py_sod_metrics = pytest.importorskip("py_sod_metrics")


def synthetic_pair(seed: int, H: int = 160, W: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """A mask of blobs and thin lines (1-4 px, like DIS's wires and spokes) and a blurred, noisy prediction."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((H, W), np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        axes = (int(rng.integers(5, W // 4)), int(rng.integers(5, H // 4)))
        cv2.ellipse(gt, centre, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    for _ in range(12):
        p1, p2 = (int(rng.integers(0, W)), int(rng.integers(0, H))), (int(rng.integers(0, W)), int(rng.integers(0, H)))
        cv2.line(gt, p1, p2, 255, int(rng.integers(1, 5)))
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.5)
    noise = cv2.GaussianBlur(rng.standard_normal((H, W)).astype(np.float32), (0, 0), 4) * 300
    return np.clip(soft + noise, 0, 255).astype(np.uint8), gt


def stock_summary(pairs) -> dict:
    """The numbers as pysodmetrics computes them, HCE with the DIS protocol (inputs binarised at > 128)."""
    M = py_sod_metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, em, sm, mae, wfm, h = (
            M.Fmeasure(),
            M.Emeasure(),
            M.Smeasure(),
            M.MAE(),
            M.WeightedFmeasure(),
            M.HumanCorrectionEffortMeasure(),
        )
    for pred, gt in pairs:
        for m in (fm, em, sm, mae, wfm):
            m.step(pred, gt)
        h.step((pred > 128).astype(np.float64), gt > 128, normalize=False)
    f, e = fm.get_results(), em.get_results()
    p, r = f["pr"]["p"], f["pr"]["r"]
    num = 1.3 * p * r
    return {
        "maxFm": f["fm"]["curve"].max(),
        "meanFm": f["fm"]["curve"].mean(),
        "adpFm": f["fm"]["adp"],
        "maxFm_pr": (num / np.where(num == 0, 1, 0.3 * p + r)).max(),
        "wFm": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "Sm": sm.get_results()["sm"],
        "meanEm": e["em"]["curve"].mean(),
        "maxEm": e["em"]["curve"].max(),
        "adpEm": e["em"]["adp"],
        "HCE": h.get_results()["hce"],
    }


def ours(pairs) -> dict:
    return summarize([score_image(p, g, compute_mask_data(g > 128)) for p, g in pairs])


def test_every_metric_equals_pysodmetrics():
    pairs = [synthetic_pair(seed) for seed in range(6)]
    expected, got = stock_summary(pairs), ours(pairs)
    assert got["n"] == 6
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9, rel=1e-9), key


def test_edge_cases_equal_pysodmetrics():
    H, W = 64, 80
    gt = np.zeros((H, W), np.uint8)
    gt[10:40, 20:50] = 255
    constant = np.full((H, W), 77, np.uint8)
    cases = [
        (constant, gt),  # a constant prediction (min-max normalisation leaves it)
        (np.zeros((H, W), np.uint8), gt),  # nothing predicted
        (synthetic_pair(1, H, W)[0], np.zeros((H, W), np.uint8)),  # an empty mask
        (synthetic_pair(2, H, W)[0], np.full((H, W), 255, np.uint8)),  # a full mask
        (gt.copy(), gt),  # perfect
    ]
    for pred, mask in cases:
        expected, got = stock_summary([(pred, mask)]), ours([(pred, mask)])
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_hand_worked_masks():
    gt = np.zeros((64, 64), np.uint8)
    gt[16:48, 16:48] = 255
    perfect = ours([(gt.copy(), gt)])
    # a perfect prediction: every F and E at their best, no error, no correction
    assert perfect["maxFm"] == pytest.approx(1.0) and perfect["MAE"] == 0 and perfect["HCE"] == 0
    assert perfect["Sm"] == pytest.approx(1.0) and perfect["maxEm"] == pytest.approx(1.0, abs=1e-3)
    half = gt.copy()
    half[16:48, 32:48] = 0  # the right half of the square missed
    r = ours([(half, gt)])
    # at any threshold the prediction is the left half: precision 1, recall 1/2, F = 1.3 * 0.5 / (0.3 + 0.5)
    assert r["maxFm"] == pytest.approx(1.3 * 0.5 / 0.8)
    assert r["MAE"] == pytest.approx(16 * 32 / 64**2)  # the missed pixels over all pixels


def test_hce_known_answers():
    gt = np.zeros((80, 80), bool)
    gt[20:50, 20:50] = True
    skeleton = compute_mask_data(gt).skeleton
    assert hce(gt.copy(), gt, skeleton) == 0
    # a false-positive speck thinner than the relaxation (5 erosions) is forgiven
    speck = gt.copy()
    speck[65:72, 65:72] = True
    assert hce(speck, gt, skeleton) == 0
    # an isolated false-positive blob far from the object: one independent region, no boundary to trace
    blob = gt.copy()
    blob[62:76, 62:76] = True
    assert hce(blob, gt, skeleton) == 1
    # the same with the DIS reference code
    stock = py_sod_metrics.HumanCorrectionEffortMeasure()
    stock.step(blob.astype(np.float64), gt, normalize=False)
    assert stock.get_results()["hce"] == 1


def test_mask_cache_round_trip(tmp_path):
    pred, gt = synthetic_pair(3)
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), gt)
    cache = MaskCache(tmp_path / "cache")
    first = cache.get(path, gt > 128)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    second = cache.get(path, gt > 128)
    assert np.array_equal(first.skeleton, second.skeleton) and np.array_equal(first.band_codes, second.band_codes)
