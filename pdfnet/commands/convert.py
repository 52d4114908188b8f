"""``pdfnet convert``: a checkpoint's weights as a ``.safetensors`` file, which holds tensors only."""

from __future__ import annotations

import argparse

HELP = "write a checkpoint's weights as .safetensors"
EXAMPLES = """examples:
  pdfnet convert runs/pdfnet/best.pt --out pdfnet_best.safetensors
  pdfnet convert checkpoints/PDFNet_Best.pth --out checkpoints/PDFNet_Best.safetensors
  pdfnet predict photos/ --weights pdfnet_best.safetensors"""


def safetensors_path(text: str) -> str:
    if not text.endswith(".safetensors"):
        raise argparse.ArgumentTypeError(f"expected a file name ending in .safetensors, got {text}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Convert one of our checkpoints (last.pt, best.pt: the model's weights, without the optimizer) or the "
        "authors' (.pth, kept in their key layout) to .safetensors, with its variant and config in the metadata. "
        "Every loader (--weights, test --checkpoint, train.init_from=, the Python API) reads the result."
    )
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("checkpoint", help="the checkpoint to convert")
    p.add_argument("--out", required=True, type=safetensors_path, help="the .safetensors file to write")
    p.add_argument(
        "--variant", choices=["release", "cvpr"], help="the version of an authors' checkpoint without a depth head"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint import convert_to_safetensors

    metadata = convert_to_safetensors(args.checkpoint, args.out, variant=args.variant, overwrite=args.overwrite)
    print(f"wrote {args.out} ({metadata['variant']} variant)")
    return 0
