"""``pdfnet test``: predict dataset splits with a checkpoint as the authors' Test.py does, and score them."""

from __future__ import annotations

import argparse

from .options import add_device_options, input_size, non_negative_int, positive_int

HELP = "predict and score dataset splits (DIS-5K, HRSOD, UHRSD, DUTS, ...) with a checkpoint"
EXAMPLES = """examples:
  pdfnet test --checkpoint checkpoints/PDFNet_Best.pth --data-root data/DIS5K --out runs/test --tta
  pdfnet test --checkpoint runs/pdfnet/best.pt --data-root data/DIS5K --splits DIS-VD --out runs/vd
  pdfnet test --checkpoint runs/pdfnet/best.pt --data-root data --splits DUTS-TE ECSSD HRSOD-TE --out runs/sod"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Predict every image of each split (8-bit PNGs at each image's size under OUT/preds/<split>/, as the "
        "authors' Test.py writes them) and score them: OUT/<split>.json, OUT/metrics.json, OUT/results.md."
    )
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--checkpoint", required=True, help="ours (last.pt, best.pt, .safetensors) or the authors' .pth")
    p.add_argument("--data-root", required=True, help="the split folders, or one folder per dataset (data/DIS5K, ...)")
    p.add_argument(
        "--splits",
        nargs="+",
        default=["DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4"],
        help="DIS-VD, DIS-TE1..4, HRSOD-TE, UHRSD-TE, DUTS-TE, DUT-OMRON, HKU-IS, ECSSD, PASCAL-S, ... or PATH:NAME",
    )
    p.add_argument("--out", required=True, help="folder for predictions, per-split results and the table")
    p.add_argument("--tta", action="store_true", help="flips x scales 0.75, 1, 1.25 (the authors' protocol)")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--variant", choices=["release", "cvpr"], help="override the checkpoint's version")
    p.add_argument("--input-size", type=input_size, default=1024)
    p.add_argument("--depth-folder", default="depth_large", help="the depth maps beside each split's images")
    p.add_argument("--workers", type=positive_int, help="scoring processes (default: all cores)")
    p.add_argument("--loader-workers", type=non_negative_int, default=2, help="image reading processes")
    p.add_argument("--cache-dir", default="default", help="mask cache for the metrics")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="predict every image again (default: a rerun predicts only what is missing, and refuses predictions "
        "made with other options)",
    )
    add_device_options(p)


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..distributed import process_group
    from ..evaluation.testing import TestOptions, run_test

    # every option is a flag of the same name
    options = TestOptions(**{f.name: getattr(args, f.name) for f in fields(TestOptions)})
    with process_group(args.device) as rt:  # under torchrun: predictions sharded, scored by rank 0
        run_test(args.checkpoint, args.data_root, args.splits, args.out, options, rt)
    return 0
