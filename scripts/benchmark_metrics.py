"""Time the DIS metric suite on synthetic DIS-sized masks with thin structures.

    python scripts/benchmark_metrics.py --images 8 --workers 2

Prints seconds per image for the first run (mask skeletons and distance data computed and cached), the cached
run, and, with --stock, pysodmetrics on one image in one process.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from pdfnet.evaluation.folders import evaluate_predictions


def synthetic_pair(seed: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Blobs plus 150 lines of 1-5 px (DIS's wires and spokes), and a blurred, noisy prediction of them."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((H, W), np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        axes = (int(rng.integers(50, 400)), int(rng.integers(50, 300)))
        cv2.ellipse(gt, centre, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
    for _ in range(150):
        p1, p2 = (int(rng.integers(0, W)), int(rng.integers(0, H))), (int(rng.integers(0, W)), int(rng.integers(0, H)))
        cv2.line(gt, p1, p2, 255, int(rng.integers(1, 6)))
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 3)
    noise = cv2.GaussianBlur(rng.standard_normal((H, W)).astype(np.float32), (0, 0), 8) * 400
    return np.clip(soft + noise, 0, 255).astype(np.uint8), gt


def stock_time(pred: np.ndarray, gt: np.ndarray) -> float:
    import py_sod_metrics as M

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ms = [M.Fmeasure(), M.Emeasure(), M.Smeasure(), M.MAE(), M.WeightedFmeasure()]
        start = time.perf_counter()
        for m in ms:
            m.step(pred, gt)
        M.HumanCorrectionEffortMeasure().step((pred > 128).astype(np.float64), gt > 128, normalize=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=3072)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stock", action="store_true", help="also time pysodmetrics on one image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pred").mkdir()
        (tmp / "gt").mkdir()
        for i in range(args.images):
            pred, gt = synthetic_pair(i, args.height, args.width)
            cv2.imwrite(str(tmp / "pred" / f"{i}.png"), pred)
            cv2.imwrite(str(tmp / "gt" / f"{i}.png"), gt)
        timings = {}
        for run in ("first run", "cached run"):
            start = time.perf_counter()
            evaluate_predictions(tmp / "pred", tmp / "gt", args.workers, tmp / "cache", progress=False)
            timings[run] = (time.perf_counter() - start) / args.images
        print(f"{args.images} images of {args.width}x{args.height}, {args.workers} worker(s):")
        for run, seconds in timings.items():
            print(f"  {run:<11} {seconds:6.2f} s/image (all metrics incl. HCE)")
        if args.stock:
            pred, gt = synthetic_pair(0, args.height, args.width)
            print(f"  pysodmetrics {stock_time(pred, gt):6.2f} s/image (one process)")


if __name__ == "__main__":
    main()
