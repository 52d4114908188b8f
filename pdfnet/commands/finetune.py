"""``pdfnet finetune``: fine-tune PDFNet on a folder of photos and a folder of their masks, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fine-tune PDFNet on your own photos and masks (depth maps, validation split, before/after scores)"
EXAMPLES = """examples:
  pdfnet finetune photos/ masks/ --out runs/mine
  pdfnet finetune photos/ masks/ --out runs/mine --depth-models large train.epochs=20
  pdfnet finetune photos/ masks/ --out runs/mine --val val_photos/ val_masks/ --from general
  pdfnet finetune photos/ masks/ --out runs/mine --depth-models large=/models/Depth-Anything-V2-Large-hf
  pdfnet finetune photos/ masks/ --out runs/mine train.checkpoint_activations=true train.precision=bf16
  pdfnet finetune photos/ masks/ --out runs/mine --resume auto          (continue an interrupted run)
  pdfnet predict new_photos/ --weights runs/mine/best.pt                 (use the result)

Masks are black background and white object, of their photo's size, paired with it by file stem (photos/cat.jpg
and masks/cat.png). Every problem with the folders is listed before anything is written.

Depth maps are made once into a cache beside the photos (PARENT/.pdfnet-depth/<photos folder>/), reused by later
runs. The published PDFNet weights (trained on DIS-5K) and DIS-5K itself are for research; Depth-Anything-V2-Base
and -Large are CC-BY-NC-4.0 (non-commercial), -Small Apache-2.0 (--depth-models small for commercial work)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    # the hub's names (smallest first, as training.finetune.DEPTH_SIZES): building the parser imports no torch,
    # which `pdfnet evaluate` and metric_tools/evaluate.py run without
    from ..hub import DEPTH_MODELS

    p.description = (
        "Fine-tune PDFNet on your photos: checks the folders, makes the pseudo-depth maps, holds out a validation "
        "split, scores the starting weights, trains with the paper's recipe (key=value changes it, as train.py), "
        "and ends with a before/after table and OUT/best.pt."
    )
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("images", metavar="IMAGES", help="folder of photos")
    p.add_argument("masks", metavar="MASKS", help="folder of their masks (same file stems)")
    p.add_argument("--out", required=True, help="the run's folder (checkpoints, scores, logs); one run per folder")
    p.add_argument(
        "--val",
        nargs=2,
        metavar=("IMAGES", "MASKS"),
        help="a validation split of your own (default: --val-fraction of IMAGES held out at random)",
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="share of the photos held out for validation without --val (0.1; at least one photo)",
    )
    p.add_argument(
        "--from",
        dest="start",
        default="base",
        help="starting weights: base (the published DIS-5K model, default), general, imagenet (Swin-B encoder "
        "alone), or a checkpoint file (ours or the authors')",
    )
    p.add_argument(
        "--depth-models",
        nargs="+",
        default=list(DEPTH_MODELS),
        metavar="NAME[=MODEL]",
        help="which Depth-Anything-V2 maps to make and train with: small base large (default, the recipe), large "
        "alone for a quicker run, small alone for commercial use; NAME=MODEL takes that model from a local folder "
        "or Hugging Face repo id (as predict --depth-model), e.g. large=/models/Depth-Anything-V2-Large-hf",
    )
    p.add_argument("--depth-cache", help="folder for the depth maps instead of PARENT/.pdfnet-depth beside IMAGES")
    p.add_argument(
        "--resume",
        help="'auto': continue OUT/last.pt when it exists (else start); or a checkpoint path. Give the same IMAGES, "
        "MASKS and options as the run started with",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted key=value settings (anywhere), e.g. train.epochs=20 train.freeze=encoder "
        "train.checkpoint_activations=true data.input_size=768",
    )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..distributed import LaunchError, launched_by_torchrun
    from ..training.finetune import FinetuneSetup, finetune

    if launched_by_torchrun():
        raise LaunchError(
            "pdfnet finetune runs in one process; for several GPUs, start it for one epoch (train.epochs=1), then "
            "continue with torchrun train.py --config OUT/config.yaml --resume auto train.epochs=N"
        )
    # argparse gives --depth-models the key=value overrides that follow it: they are settings (a dotted key)
    depth_models = [m for m in args.depth_models if "." not in m.partition("=")[0]]
    overrides = [m for m in args.depth_models if "." in m.partition("=")[0]] + list(args.overrides)
    setup = FinetuneSetup(
        images=Path(args.images),
        masks=Path(args.masks),
        out=Path(args.out),
        val=(Path(args.val[0]), Path(args.val[1])) if args.val else None,
        val_fraction=args.val_fraction,
        start=args.start,
        depth_models=tuple(depth_models),
        depth_cache=Path(args.depth_cache) if args.depth_cache else None,
    )
    finetune(setup, overrides, args.resume)
    return 0
