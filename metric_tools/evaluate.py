"""Score a folder of predictions against DIS masks with the field's metrics.

    python metric_tools/evaluate.py --pred runs/preds/DIS-TE1 --gt data/DIS5K/DIS-TE1/masks --out te1.json

Writes the summary as JSON (maxFm, meanFm, adpFm, maxFm_pr, wFm, MAE, Sm, meanEm, maxEm, adpEm, HCE, n), the
per-image scores as CSV and the precision-recall and F-measure curves as PNG, beside it.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdfnet.evaluate import EvaluationError, evaluate_predictions, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of 8-bit prediction maps, named by mask stem")
    parser.add_argument("--gt", required=True, help="folder of ground-truth masks")
    parser.add_argument("--out", required=True, help="result JSON (CSV and PNG are written beside it)")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    parser.add_argument("--cache-dir", default="default", help="mask cache (default: ~/.cache/pdfnet/masks)")
    parser.add_argument("--no-cache", action="store_true", help="recompute mask skeletons every time")
    parser.add_argument("--allow-missing", action="store_true", help="score the predictions that exist")
    parser.add_argument("--no-plot", action="store_true", help="skip the curves PNG")
    args = parser.parse_args(argv)
    try:
        summary, scores = evaluate_predictions(
            args.pred, args.gt, args.workers, None if args.no_cache else args.cache_dir, args.allow_missing
        )
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_results(summary, scores, args.out, plot=not args.no_plot)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
