"""``pdfnet evaluate``: score a folder of predictions against DIS masks with the field's metrics."""

from __future__ import annotations

import argparse
import json

from .options import positive_int

HELP = "score a folder of predictions against masks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Score 8-bit predictions (matched to masks by file stem) and write the summary JSON (maxFm, meanFm, adpFm, "
        "maxFm_pr, wFm, MAE, Sm, meanEm, maxEm, adpEm, HCE, n), per-image CSV and PR/F curves PNG beside it."
    )
    p.add_argument("--pred", required=True, help="folder of 8-bit prediction maps, named by mask stem")
    p.add_argument("--gt", required=True, help="folder of ground-truth masks")
    p.add_argument("--out", required=True, help="result JSON (CSV and PNG are written beside it)")
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument("--cache-dir", default="default", help="mask cache (default: ~/.cache/pdfnet/masks)")
    p.add_argument("--no-cache", action="store_true", help="recompute mask skeletons every time")
    p.add_argument("--allow-missing", action="store_true", help="score the predictions that exist")
    p.add_argument("--no-plot", action="store_true", help="skip the curves PNG")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.folders import evaluate_predictions, write_results
    from ..io import check_writable_file

    out = check_writable_file(args.out)  # before the work, not after it
    summary, scores = evaluate_predictions(
        args.pred, args.gt, args.workers, None if args.no_cache else args.cache_dir, args.allow_missing
    )
    write_results(summary, scores, out, plot=not args.no_plot)
    print(json.dumps(summary, indent=2))
    return 0
