"""``python -m pdfnet predict``: cutouts of your own photos."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from .depth import DEFAULT_DEPTH_MODEL
from .memory import keep_freed_memory

EXAMPLE_IMAGE = "chelsea.png"  # Chelsea the cat, CC0, from scikit-image's sample data


def example_image() -> Path:
    """The photo shipped with the package, cut out when ``predict`` gets no input."""
    return Path(str(resources.files("pdfnet") / "assets" / EXAMPLE_IMAGE))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pdfnet", description="PDFNet dichotomous image segmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="cut the main object out of images")
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns (default: the bundled example)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--weights", help="our checkpoint or the authors' PDFNet_Best.pth (default: fetched from the Hub)")
    p.add_argument("--variant", choices=["release", "cvpr"], help="version of an authors'-layout checkpoint")
    p.add_argument(
        "--depth-model", default=DEFAULT_DEPTH_MODEL, help="Depth-Anything-V2: small, base, large, repo id or folder"
    )
    p.add_argument("--depth", help="folder of ready-made depth maps named by input stem (skips the depth model)")
    p.add_argument("--format", choices=["mask", "rgba", "both"], default="rgba", dest="fmt")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--input-size", type=int, default=1024, help="network input side, a multiple of 256")
    p.add_argument("--tta", action="store_true", help="flip x scale test-time augmentation (6 passes)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    if args.command == "predict":
        from .predict import run_predict

        return run_predict(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
