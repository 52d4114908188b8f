"""Scoring folders of predictions against DIS masks: the whole metric suite, in parallel, with cached masks."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import queue
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import EvaluationError, ImageReadError
from ..io import atomic_path, is_listed, read_gray, write_text_atomic
from ..memory import keep_freed_memory
from .metrics import ImageScores, MaskCache, score_image, summarize

METRIC_KEYS = ("maxFm", "meanFm", "adpFm", "maxFm_pr", "wFm", "MAE", "Sm", "meanEm", "maxEm", "adpEm", "HCE")
METRIC_KEYS += ("maxBIoU", "meanBIoU", "n")
CSV_KEYS = ("name", "maxFm", "meanFm", "adpFm", "wFm", "MAE", "Sm", "meanEm", "maxEm", "adpEm", "HCE")
CSV_KEYS += ("maxBIoU", "meanBIoU")


def default_cache_dir() -> Path:
    """``$PDFNET_CACHE`` or ``~/.cache/pdfnet``, plus ``masks``."""
    root = os.environ.get("PDFNET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdfnet"
    return Path(root) / "masks"


@dataclass
class Pair:
    name: str
    pred: Path
    gt: Path


def match_files(
    pred_dir: str | os.PathLike, gt_dir: str | os.PathLike | Mapping[str, Path]
) -> tuple[list[Pair], list[str]]:
    """Predictions and masks matched by name: (pairs in mask order, names of masks with no prediction).

    ``gt_dir`` is a folder of masks, matched to predictions by file stem, or a mapping from prediction stem to
    mask file (a split given by list files, whose masks are named as they like, e.g. ``x_gt.png`` for ``x``).
    """
    pred_dir = Path(pred_dir)
    listed = isinstance(gt_dir, Mapping)
    for folder, what in ((pred_dir, "prediction"), *(() if listed else ((Path(gt_dir), "mask"),))):
        if not folder.is_dir():
            raise EvaluationError(f"no {what} folder {folder}")
    preds = {p.stem: p for p in sorted(pred_dir.iterdir()) if is_listed(p)}
    if listed:
        gts = [(name, Path(path)) for name, path in gt_dir.items()]
    else:
        gts = [(p.stem, p) for p in sorted(Path(gt_dir).iterdir()) if is_listed(p)]
    if not gts:
        raise EvaluationError(f"no masks in {gt_dir}")
    pairs = [Pair(name, preds[name], gt) for name, gt in gts if name in preds]
    missing = [name for name, _ in gts if name not in preds]
    return pairs, missing


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_map(path: str | os.PathLike) -> np.ndarray:
    """A prediction or mask as :func:`pdfnet.io.read_gray` reads it: (H, W) uint8.

    8-bit greyscale PNGs (the usual predictions and masks) are decoded by OpenCV, a third faster than Pillow,
    to the same pixels (the format is lossless); anything else, and any file OpenCV cannot decode, goes to
    ``read_gray`` and its conversions and errors.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = b""
    # IHDR right after the signature: bit depth (byte 24) 8, colour type (byte 25) 0, greyscale
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24:26] == b"\x08\x00":
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None and image.ndim == 2 and image.dtype == np.uint8:
            return image
    return read_gray(path)


def _score_pair(args: tuple[Pair, str | None]) -> tuple[ImageScores | None, str | None, bool]:
    """(scores, error message, resized) for one pair; runs in a worker process."""
    pair, cache_dir = args
    try:
        gt, mask_data = MaskCache(cache_dir).read(pair.gt, lambda: read_map(pair.gt) > 128)
        pred = read_map(pair.pred)
    except ImageReadError as e:
        return None, str(e), False
    resized = pred.shape != gt.shape
    if resized:  # bilinear to the mask's size
        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
    return score_image(pred, gt, mask_data, name=pair.name), None, resized


def _init_worker() -> None:
    # the metrics allocate many image-sized arrays: keep freed memory rather than fault it in anew; and one
    # OpenCV thread per worker, as the workers already use every core
    keep_freed_memory()
    cv2.setNumThreads(1)


def _worker(jobs: mp.Queue, results: mp.Queue, cache_dir: str | None) -> None:
    """A scoring process: takes (index, pair) from ``jobs`` until None, puts (index, result) in ``results``."""
    _init_worker()
    while (job := jobs.get()) is not None:
        index, pair = job
        try:
            results.put((index, _score_pair((pair, cache_dir))))
        except Exception:  # a bug: reported to the parent with its traceback instead of hanging it
            results.put((index, traceback.format_exc()))


def _score_all(pairs: list[Pair], cache_dir: str | None, workers: int, on_result) -> list:
    """``_score_pair``'s result for every pair, in order, on ``workers`` processes, calling ``on_result`` as
    each arrives.

    This process is one of them: it scores from the same queue while the others start (a spawned process
    spends about half a second importing before its first image) and while they run.
    """
    if workers == 1:
        return [on_result(_score_pair((pair, cache_dir))) for pair in pairs]
    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    others = [ctx.Process(target=_worker, args=(jobs, results, cache_dir), daemon=True) for _ in range(workers - 1)]
    for process in others:
        process.start()
    for job in enumerate(pairs):
        jobs.put(job)
    for _ in range(workers):  # one stop for each process taking jobs, this one included
        jobs.put(None)
    ordered: list = [None] * len(pairs)
    done = 0

    def collect(index: int, result) -> None:
        nonlocal done
        if isinstance(result, str):
            raise RuntimeError(f"scoring {pairs[index].pred} failed in a worker process:\n{result}")
        ordered[index] = on_result(result)
        done += 1

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the other processes use the other cores
    try:
        while (job := jobs.get()) is not None:
            collect(job[0], _score_pair((job[1], cache_dir)))
            while not results.empty():
                collect(*results.get())
        while done < len(pairs):
            try:
                collect(*results.get(timeout=1))
            except queue.Empty:
                if all(process.exitcode is not None for process in others) and results.empty():
                    codes = [process.exitcode for process in others]
                    raise EvaluationError(f"a scoring process ended before its work (exit codes {codes})") from None
    finally:
        cv2.setNumThreads(threads)
        if done < len(pairs):  # stopped early: nothing will read the queues any more
            for channel in (jobs, results):
                channel.cancel_join_thread()
            for process in others:
                process.terminate()
        for process in others:
            process.join()
    return ordered


def evaluate_predictions(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike | Mapping[str, Path],
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = "default",
    allow_missing: bool = False,
    progress: bool = True,
    desc: str = "score",
) -> tuple[dict[str, float], list[ImageScores]]:
    """Score every mask of ``gt_dir`` against the prediction of the same stem in ``pred_dir``; ``gt_dir`` is a
    folder, or a mapping from prediction stem to mask file (a split given by list files).

    Args:
        workers: processes (default: all cores).
        cache_dir: where mask skeletons and distance data are cached ("default": :func:`default_cache_dir`;
            None: no cache).
        allow_missing: score the predictions that exist instead of failing on missing ones.

    Returns:
        (the summary with :data:`METRIC_KEYS`, per-image scores).

    Raises:
        EvaluationError: missing predictions (unless allowed) or unreadable files, all named.
    """
    pairs, missing = match_files(pred_dir, gt_dir)
    if isinstance(gt_dir, Mapping):  # listed mask files: named by their first one's folder in messages
        gt_dir = f"the listed masks ({next(iter(gt_dir.values())).parent}, ...)" if gt_dir else "the listed masks"
    if missing and not allow_missing:
        raise EvaluationError(
            f"{len(missing)} mask(s) in {gt_dir} have no prediction in {pred_dir}: {', '.join(missing[:20])}"
            + (" ..." if len(missing) > 20 else "")
            + " (--allow-missing scores what exists)"
        )
    if not pairs:
        raise EvaluationError(f"no prediction in {pred_dir} matches a mask of {gt_dir}")
    cache = None if cache_dir is None else str(default_cache_dir() if cache_dir == "default" else cache_dir)
    workers = max(1, min(workers or os.cpu_count() or 1, len(pairs)))
    from tqdm import tqdm  # here, not at the top: the worker processes need not import it

    with tqdm(total=len(pairs), desc=desc, disable=not progress) as bar:

        def advance(result):
            bar.update()
            return result

        results = _score_all(pairs, cache, workers, on_result=advance)
    scores = [score for score, error, _ in results if not error]
    errors = [error for _, error, _ in results if error]
    resized = sum(was_resized for _, error, was_resized in results if not error)
    if errors:
        raise EvaluationError("cannot score: " + "; ".join(errors))
    if resized:
        print(f"warning: {resized} prediction(s) differ in size from their masks; resized (bilinear)", file=sys.stderr)
    summary = summarize(scores)
    if missing:
        print(f"warning: {len(missing)} mask(s) without prediction were left out", file=sys.stderr)
    return summary, scores


def write_results(summary: dict, scores: list[ImageScores], out: str | os.PathLike, plot: bool = True) -> None:
    """``out`` (JSON of the summary), the per-image CSV beside it and, with ``plot``, the curves as PNG."""
    out = Path(out)
    write_text_atomic(out, json.dumps({k: summary[k] for k in METRIC_KEYS}, indent=2) + "\n")
    rows = [
        {
            "name": s.name,
            "maxFm": s.fm_curve.max(),
            "meanFm": s.fm_curve.mean(),
            "adpFm": s.adp_fm,
            "wFm": s.wfm,
            "MAE": s.mae,
            "Sm": s.sm,
            "meanEm": s.em_curve.mean(),
            "maxEm": s.em_curve.max(),
            "adpEm": s.adp_em,
            "HCE": s.hce,
            "maxBIoU": s.extra["biou"].max(),
            "meanBIoU": s.extra["biou"].mean(),
        }
        for s in scores
    ]
    lines = _csv_text(rows)
    write_text_atomic(out.with_suffix(".csv"), lines)
    if plot:
        plot_curves(scores, out.with_suffix(".png"), title=out.stem)


def _csv_text(rows: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_KEYS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float | np.floating) else v) for k, v in row.items()})
    return buffer.getvalue()


def plot_curves(scores: list[ImageScores], path: Path, title: str = "") -> None:
    """Precision-recall and F-measure-versus-threshold curves of a split, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision = np.mean([s.precision for s in scores], axis=0)
    recall = np.mean([s.recall for s in scores], axis=0)
    fm = np.mean([s.fm_curve for s in scores], axis=0)
    thresholds = np.arange(255, -1, -1)
    fig, (ax_pr, ax_f) = plt.subplots(1, 2, figsize=(10, 4))
    ax_pr.plot(recall, precision)
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="precision-recall")
    ax_f.plot(thresholds, fm)
    ax_f.set(xlabel="threshold", ylabel="F-measure (beta^2 = 0.3)", xlim=(0, 255), ylim=(0, 1.01))
    ax_f.set_title(f"F-measure (max {fm.max():.3f})")
    for ax in (ax_pr, ax_f):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
