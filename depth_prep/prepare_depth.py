"""Make the Depth-Anything-V2 pseudo-depth maps that PDFNet's training and testing read.

    python depth_prep/prepare_depth.py --data-root data/DIS5K --splits DIS-TR DIS-VD \
        --model large --out-name depth_large

See the README's "Pseudo-depth" section for the four folders the original uses.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdfnet.depth import DepthEstimator, prepare_depth_maps  # noqa: E402
from pdfnet.memory import keep_freed_memory  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="DIS-5K root holding one folder per split")
    parser.add_argument("--splits", nargs="+", required=True, help="e.g. DIS-TR DIS-VD DIS-TE1")
    parser.add_argument("--model", default="large", help="small, base, large, a Hugging Face repo id or a local folder")
    parser.add_argument("--out-name", default="depth_large", help="folder written beside images/ in each split")
    parser.add_argument(
        "--input-size", type=int, default=518, help="the depth model's input side (518; 1024 for depth_large_1024)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--format", choices=["png8", "png16"], default="png8", dest="fmt")
    parser.add_argument("--overwrite", action="store_true", help="redo maps that already exist")
    args = parser.parse_args(argv)
    keep_freed_memory()

    try:
        estimator = DepthEstimator(args.model, device=args.device, precision=args.precision, input_size=args.input_size)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written, errors = prepare_depth_maps(
        args.data_root, args.splits, estimator, args.out_name, args.batch_size, args.overwrite, args.fmt
    )
    print(f"wrote {written} depth maps")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
