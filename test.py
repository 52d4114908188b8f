"""Predict the DIS splits with a PDFNet checkpoint and score them.

    python test.py --checkpoint checkpoints/PDFNet_Best.pth --data-root data/DIS5K \
        --splits DIS-VD DIS-TE1 DIS-TE2 DIS-TE3 DIS-TE4 --out runs/test
"""

import argparse
import sys

from pdfnet.evaluate import EvaluationError
from pdfnet.memory import keep_freed_memory
from pdfnet.scoring import run_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="ours (last.pt, best.pt) or the authors' PDFNet_Best.pth")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--splits", nargs="+", default=["DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"])
    parser.add_argument("--out", required=True, help="folder for predictions, per-split results and the table")
    parser.add_argument("--tta", action="store_true", help="flips x scales 0.75, 1, 1.25, logits averaged")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--variant", choices=["release", "cvpr"], help="override the checkpoint's version")
    parser.add_argument("--device")
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, help="scoring processes (default: all cores)")
    parser.add_argument("--cache-dir", default="default", help="mask cache for the metrics")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        run_test(
            args.checkpoint,
            args.data_root,
            args.splits,
            args.out,
            args.tta,
            args.batch_size,
            args.precision,
            args.variant,
            args.device,
            args.input_size,
            args.workers,
            args.cache_dir,
        )
    except (EvaluationError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
