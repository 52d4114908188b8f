"""``pdfnet depth``: the pseudo-depth maps PDFNet's training and testing read (Depth-Anything-V2's, or any other
transformers depth estimator's)."""

from __future__ import annotations

import argparse
import sys

from ..hub import LICENSE_NOTE
from .options import add_depth_kind_option, add_device_options, depth_input_size, positive_int

HELP = "make the pseudo-depth maps of dataset splits"
EXAMPLES = """examples:
  pdfnet depth --data-root data/DIS5K --splits DIS-TR DIS-VD --model large --out-name depth_large
  pdfnet depth --data-root data/DIS5K --splits DIS-TR --model large --out-name depth_large_1024 --input-size 1024
  pdfnet depth --data-root data --splits HRSOD-TR UHRSD-TR DUTS-TE ECSSD --model large --out-name depth_large
  pdfnet depth --data-root data/DIS5K --splits DIS-TE1 --model Intel/zoedepth-nyu-kitti --out-name depth_zoe"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write <split folder>/<out-name>/<stem>.png for every image (<root>/<split>/ for DIS-5K; README.md, Other "
        "datasets, says where for the others): Depth-Anything-V2's infer_image (another transformers depth model: its "
        "image processor), near bright, min-max normalised, 8 bits. Each map records what made it (model, input "
        "size, format, precision): existing maps made the same way are skipped, those made otherwise kept and "
        "reported unless --overwrite."
    )
    p.epilog = EXAMPLES + "\n\n" + LICENSE_NOTE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--data-root", required=True, help="the split folders, or one folder per dataset")
    p.add_argument(
        "--splits", nargs="+", required=True, help="e.g. DIS-TR DIS-VD DIS-TE1, HRSOD-TR, DUTS-TE, ECSSD, or PATH:NAME"
    )
    p.add_argument(
        "--model",
        default="large",
        help="Depth-Anything-V2 small, base or large, or any transformers depth estimator: a Hugging Face repo id "
        "or a local folder",
    )
    add_depth_kind_option(p)
    p.add_argument("--out-name", default="depth_large", help="folder written beside images/ in each split")
    p.add_argument(
        "--input-size",
        type=depth_input_size,
        default=None,
        help="Depth-Anything's input side (default 518; 1024 for depth_large_1024); other models take their "
        "image processor's size",
    )
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--format", choices=["png8", "png16"], default="png8", dest="fmt")
    p.add_argument(
        "--overwrite", action="store_true", help="redo maps that already exist (default: skip those made alike)"
    )
    add_device_options(p)


def run(args: argparse.Namespace) -> int:
    """Under ``torchrun`` every process writes its own share of the maps; rank 0 prints the summary."""
    from ..data.depth import DEFAULT_INPUT_SIZE, DepthEstimator, prepare_depth_maps
    from ..distributed import process_group
    from ..provenance import depth_model_identity

    with process_group(args.device) as rt:

        def make_estimator() -> DepthEstimator:
            return DepthEstimator(
                args.model, rt.device, args.precision, input_size=args.input_size, kind=args.depth_kind
            )

        written, errors = prepare_depth_maps(
            args.data_root,
            args.splits,
            make_estimator,
            args.out_name,
            args.batch_size,
            args.overwrite,
            args.fmt,
            rt=rt,
            options={
                "model": depth_model_identity(args.model),
                # Depth-Anything's default when none is given, as before other families (which ignore it)
                "input-size": args.input_size or DEFAULT_INPUT_SIZE,
                "format": args.fmt,
                "precision": args.precision,
                # only when given: the family's own kind keeps the records of earlier maps valid
                **({"kind": args.depth_kind} if args.depth_kind else {}),
            },
        )
    if rt.is_main:
        processes = f" ({rt.world_size} processes)" if rt.distributed else ""
        done = "" if written or errors else " (all existed: --overwrite redoes them)"
        print(f"wrote {written} depth map(s){processes}{done}")
        for message in errors:
            print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0
