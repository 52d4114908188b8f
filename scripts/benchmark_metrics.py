"""Time our DIS metric suite against pysodmetrics, in one run, on the same DIS-sized pairs.

    python scripts/benchmark_metrics.py                        # 8 synthetic 3072x2048 pairs with thin lines
    python scripts/benchmark_metrics.py --pred P --gt G        # your own pairs, matched by file stem
    python scripts/benchmark_metrics.py --compare ../previous  # and another checkout, timed alike

Ours is timed as the whole process a user waits for: a fresh Python process that imports the scorer, starts
its worker processes and scores every pair (``evaluate_predictions`` with the command line's memory setting,
what ``metric_tools/evaluate.py`` runs), first with an empty mask cache (skeletons, nearest-object offsets and
boundaries computed and cached), then again with the cache filled; ``--compare DIR`` times another checkout
(the previous version, say) the same way in the same run. pysodmetrics is timed in this process, one pair after
another, on the same pairs and the same metrics (F and E curves with their adaptive values, S-measure, MAE,
weighted F, HCE with the DIS protocol), each pair read with Pillow (``pdfnet.io.read_gray``). The script prints
seconds per image, the ratios, how far apart the two sets of numbers are, and where our time goes, per stage, in
one process. Ours also computes BiRefNet's Boundary IoU, which pysodmetrics has not: its time counts against
ours, and its stage says how much it is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from pdfnet.evaluation import boundary as B
from pdfnet.evaluation import geometry
from pdfnet.evaluation import metrics as M
from pdfnet.evaluation.folders import match_files, read_map
from pdfnet.io import read_gray
from pdfnet.memory import keep_freed_memory

# the whole scoring process, as a user runs it: a fresh interpreter, the imports, the workers, every pair; with
# the command line's memory setting (``pdfnet evaluate`` keeps freed memory)
_OURS = """
import json, sys
from pdfnet.memory import keep_freed_memory
keep_freed_memory()
from pdfnet.evaluation.folders import evaluate_predictions
summary, _ = evaluate_predictions(sys.argv[1], sys.argv[2], int(sys.argv[4]), sys.argv[3], progress=False)
print(json.dumps(summary))
"""

# what every run pays before its first image: the interpreter, the imports and the worker processes
_START_UP = """
import multiprocessing as mp, sys
from pdfnet.evaluation import folders
pool = mp.get_context("spawn").Pool(int(sys.argv[1]), initializer=folders._init_worker)
pool.map(abs, range(int(sys.argv[1])), chunksize=1)
pool.close(); pool.join()
"""


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


def run_ours(pred_dir: Path, gt_dir: Path, cache: Path, workers: int, tree: str | None = None) -> tuple[float, dict]:
    """(seconds, summary) of one whole scoring process, of this checkout or of the one at ``tree``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if tree:  # its package first on the path, before this one's (installed or not)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(tree).resolve()), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _OURS, str(pred_dir), str(gt_dir), str(cache), str(workers)],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"error: the scorer{f' of {tree}' if tree else ''} failed:\n{out.stderr}")
    return seconds, json.loads(out.stdout.strip().splitlines()[-1])


def start_up_seconds(workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _START_UP, str(workers)], check=True)
    return time.perf_counter() - start


def run_stock(pairs: list) -> tuple[float, dict[str, float], dict]:
    """(seconds per image, seconds per image by metric, summary) of pysodmetrics, one pair after another."""
    import py_sod_metrics as S

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure announces its deprecation
        fm, em, sm, mae, wfm = S.Fmeasure(), S.Emeasure(), S.Smeasure(), S.MAE(), S.WeightedFmeasure()
    hce = S.HumanCorrectionEffortMeasure()
    stages = dict.fromkeys(("reading", "F-measure", "E-measure", "S-measure", "MAE", "weighted F", "HCE"), 0.0)
    total = time.perf_counter()
    for pair in pairs:
        start = time.perf_counter()
        pred, gt = read_gray(pair.pred), read_gray(pair.gt)
        if pred.shape != gt.shape:  # as our scorer does
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        stages["reading"] += time.perf_counter() - start
        for key, metric in (("F-measure", fm), ("E-measure", em), ("S-measure", sm), ("MAE", mae), ("weighted F", wfm)):
            start = time.perf_counter()
            metric.step(pred, gt)
            stages[key] += time.perf_counter() - start
        start = time.perf_counter()
        hce.step((pred > 128).astype(np.float64), gt > 128, normalize=False)  # the DIS protocol's binarisation
        stages["HCE"] += time.perf_counter() - start
    seconds = (time.perf_counter() - total) / len(pairs)
    f, e = fm.get_results(), em.get_results()
    p, r = f["pr"]["p"], f["pr"]["r"]
    num = (1 + M.BETA2) * p * r
    summary = {
        "maxFm": f["fm"]["curve"].max(),
        "meanFm": f["fm"]["curve"].mean(),
        "adpFm": f["fm"]["adp"],
        "maxFm_pr": (num / np.where(num == 0, 1, M.BETA2 * p + r)).max(),
        "wFm": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "Sm": sm.get_results()["sm"],
        "meanEm": e["em"]["curve"].mean(),
        "maxEm": e["em"]["curve"].max(),
        "adpEm": e["em"]["adp"],
        "HCE": hce.get_results()["hce"],
    }
    return seconds, {k: v / len(pairs) for k, v in stages.items()}, summary


def our_stages(pairs: list) -> dict[str, float]:
    """Seconds per image of each stage of our scorer, in this process (one core)."""
    keep_freed_memory()  # as the command line and the worker processes do
    cv2.setNumThreads(1)
    stages: dict[str, float] = {}

    def timed(key, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        stages[key] = stages.get(key, 0.0) + time.perf_counter() - start
        return result

    with tempfile.TemporaryDirectory() as cache_dir:
        for pair in pairs:
            pred = timed("reading the prediction", read_map, pair.pred)
            gt = timed("reading the mask (first run)", read_map, pair.gt) > 128
            skeleton = timed("skeleton (first run)", geometry.skeletonize, gt)
            codes = timed("nearest-object offsets (first run)", geometry.nearest_object_codes, gt)
            boundary = timed("the mask's boundary (first run)", B.mask_boundary, gt)
            band = geometry.band_indices(gt)
            cache, compute = M.MaskCache(cache_dir), M.compute_mask_data
            computed = M.MaskData(skeleton, band, codes.ravel()[band], boundary)
            M.compute_mask_data = lambda gt, data=computed: data  # time the writing alone
            try:
                timed("cache write (first run)", cache.get, pair.gt, gt)
            finally:
                M.compute_mask_data = compute
            gt, data = timed("cache read (the mask and its data)", cache.read, pair.gt, None)
            lv = timed("level histograms", M._levels, pred, gt)
            timed("F and E curves", M._curves, lv)
            timed("adaptive F and E", M._adaptive_scores, lv, pred)
            timed("MAE", M._mean_absolute_error, lv)
            timed("S-measure", M._s_measure, lv)
            timed("weighted F", M._weighted_f, pred, gt, data.band, data.nearest, lv)
            timed("  of which the background's importance", M._weighted_false_positives, pred, gt, lv)
            box = M._erring_box(pred, gt, int(np.argmax(lv.values > 0)))
            timed("    of which the distance transform", M.object_distances, gt, *box)
            timed("HCE", M.hce, pred > 128, gt, data.skeleton)
            levels = cv2.LUT(pred, (lv.values * 255).astype(np.uint8))
            timed("Boundary IoU", M.boundary_iou_curve, levels, gt, B.DILATION_RATIO, data.boundary)
    return {k: v / len(pairs) for k, v in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="synthetic pairs (without --pred/--gt)")
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=3072)
    parser.add_argument("--workers", type=int, default=2, help="our worker processes (the ratio's goal: 2 cores)")
    parser.add_argument("--pred", help="a folder of 8-bit predictions, instead of synthetic pairs")
    parser.add_argument("--gt", help="the folder of their masks")
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="another checkout of this project (e.g. the previous version, from git worktree or git archive), "
        "timed the same way in the same run, each of its runs right after ours",
    )
    args = parser.parse_args()
    if bool(args.pred) != bool(args.gt):
        parser.error("--pred and --gt go together")
    if args.compare and not (Path(args.compare) / "pdfnet" / "evaluation" / "folders.py").is_file():
        parser.error(f"--compare: {args.compare} holds no checkout of this project (no pdfnet/evaluation/folders.py)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.pred:
            pred_dir, gt_dir = Path(args.pred), Path(args.gt)
        else:
            pred_dir, gt_dir = tmp / "pred", tmp / "gt"
            pred_dir.mkdir()
            gt_dir.mkdir()
            for i in range(args.images):
                pred, gt = synthetic_pair(i, args.height, args.width)
                cv2.imwrite(str(pred_dir / f"{i}.png"), pred)
                cv2.imwrite(str(gt_dir / f"{i}.png"), gt)
        pairs, _ = match_files(pred_dir, gt_dir)
        n = len(pairs)
        shape = cv2.imread(str(pairs[0].gt), cv2.IMREAD_GRAYSCALE).shape
        times, summaries = {}, {}  # times: (who, run) -> seconds for all pairs
        for run in ("first run", "cached run"):  # the same cache folder: the second run finds it filled
            times["ours", run], summaries[run] = run_ours(pred_dir, gt_dir, tmp / "cache", args.workers)
            if args.compare:
                times[args.compare, run], _ = run_ours(pred_dir, gt_dir, tmp / "other", args.workers, args.compare)
        ours = summaries["first run"]
        start_up = start_up_seconds(args.workers)
        stock, stock_stages, expected = run_stock(pairs)
        stages = our_stages(pairs)

    from importlib.metadata import version

    source = f"from {pred_dir}" if args.pred else "synthetic"
    print(f"{n} pairs ({source}, the first {shape[1]}x{shape[0]}), ", end="")
    print(f"{os.cpu_count()} CPU cores, ours with {args.workers} worker process(es)")
    labels = {key: f"{key[0]}, {key[1]} (whole process)" for key in times}
    width = max(33, *(len(label) + 1 for label in labels.values()))
    stock_label = f"pysodmetrics {version('pysodmetrics')}, one process"
    print(f"  {stock_label:<{width}}{stock:7.2f} s/image")
    for key, seconds in times.items():
        print(f"  {labels[key]:<{width}}{seconds / n:7.2f} s/image   {stock / (seconds / n):5.1f}x pysodmetrics")
    worst = max(abs(ours[k] - v) / max(abs(v), 1e-12) for k, v in expected.items())
    print(f"  largest relative difference of the {len(expected)} summary numbers: {worst:.1e}")
    print(f"where the time goes, per image on one core (ours; start-up once per run: {start_up:.2f} s)")
    for key, seconds in stages.items():
        print(f"  {key:<40} {seconds * 1000:8.1f} ms")
    print("pysodmetrics, per image:")
    for key, seconds in stock_stages.items():
        print(f"  {key:<40} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
