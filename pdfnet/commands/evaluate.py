"""``pdfnet evaluate``: score a folder of predictions against DIS masks with the field's metrics, or several
methods' folders over several splits into the comparison table papers print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import positive_int

HELP = "score predictions against masks: one folder, or several methods over several splits (a paper's table)"
EXAMPLES = """examples:
  pdfnet evaluate --pred runs/test/preds/DIS-TE1 --gt data/DIS5K/DIS-TE1/gt --out te1.json
  pdfnet evaluate --pred PDFNet=runs/pdfnet/preds/{split} --pred BiRefNet=results/birefnet/{split} \\
      --gt data/DIS5K/{split}/gt --splits DIS-VD DIS-TE1 DIS-TE2 DIS-TE3 DIS-TE4 --out runs/table
  pdfnet evaluate --pred A=runs/a/{split} --pred B=runs/b/{split} --gt data/DIS5K --splits DIS-VD DIS-TE1 \\
      --out runs/table                   # --gt without {split}: a data root, masks found by the split's layout"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One folder: score 8-bit predictions (matched to masks by file stem) and write the summary JSON (maxFm,\n"
        "meanFm, adpFm, maxFm_pr, wFm, MAE, Sm, meanEm, maxEm, adpEm, HCE, maxBIoU, meanBIoU, n), a per-image CSV\n"
        "and a PNG of the PR and F curves beside it.\n\n"
        "Several methods (--pred NAME=DIR, repeated; {split} in DIR stands for each of --splits): --out is a\n"
        "folder that receives results.md, results.csv, results.tex (booktabs), metrics.json and pr_<split>.png,\n"
        "and keeps each method's scores so that a rerun scores only what changed."
    )
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--pred",
        required=True,
        action="append",
        help="folder of 8-bit prediction maps named by mask stem; NAME=DIR, repeated, for a table of methods",
    )
    p.add_argument("--gt", required=True, help="folder of ground-truth masks ({split} where the split's name goes)")
    p.add_argument("--splits", nargs="+", help="split names that fill {split} (a table; DIS-TE1..4 add TE-mean)")
    p.add_argument("--out", required=True, help="result JSON (CSV and PNG beside it); for a table, a folder")
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument("--cache-dir", default="default", help="mask cache (default: ~/.cache/pdfnet/masks)")
    p.add_argument("--no-cache", action="store_true", help="recompute mask skeletons every time")
    p.add_argument("--allow-missing", action="store_true", help="score the predictions that exist")
    p.add_argument("--no-plot", action="store_true", help="skip the curves PNG")
    p.add_argument("--rescore", action="store_true", help="a table: score every method again (default: reuse)")


def is_table(args: argparse.Namespace) -> bool:
    """The table form: several --pred, a NAME=DIR, or --splits."""
    from ..evaluation.table import split_spec

    return len(args.pred) > 1 or bool(args.splits) or any(split_spec(p)[0] is not None for p in args.pred)


def run(args: argparse.Namespace) -> int:
    if is_table(args):
        return run_table(args)
    from ..evaluation.folders import evaluate_predictions, write_results
    from ..io import check_writable_file

    out = check_writable_file(args.out)  # before the work, not after it
    summary, scores = evaluate_predictions(
        args.pred[0], args.gt, args.workers, None if args.no_cache else args.cache_dir, args.allow_missing
    )
    write_results(summary, scores, out, plot=not args.no_plot)
    print(json.dumps(summary, indent=2))
    return 0


def run_table(args: argparse.Namespace) -> int:
    from ..errors import OutputError
    from ..evaluation.table import evaluate_table, parse_method

    if args.out.endswith(".json"):
        raise OutputError(f"--out {args.out}: several methods write a folder of tables (results.md, ...), not JSON")
    _, errors = evaluate_table(
        [parse_method(p) for p in args.pred],
        args.gt,
        args.out,
        args.splits,
        args.workers,
        None if args.no_cache else args.cache_dir,
        args.allow_missing,
        args.rescore,
        plot=not args.no_plot,
    )
    print((Path(args.out) / "results.md").read_text(), end="")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0
