"""``pdfnet export``: PDFNet (and optionally its depth model) as ONNX graphs for ONNX Runtime and TensorRT."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from .options import input_size

HELP = "export the network (and depth model) to ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write OUT/pdfnet.onnx: inputs image (B, 3, S, S) ImageNet-normalised float32 and depth (B, 1, S, S) in "
        "[0, 1], output mask (B, 1, S, S), the probability; the batch is dynamic, S fixed (--input-size). With "
        "--depth-model also OUT/depth.onnx (pixel_values (B, 3, h, w), h and w multiples of 14 -> "
        "predicted_depth). Run them with: pdfnet predict --weights OUT/pdfnet.onnx --depth-model OUT/depth.onnx"
    )
    p.add_argument("--weights", default="base", help="base, general, or a checkpoint file (ours or the authors')")
    p.add_argument("--variant", choices=["release", "cvpr"], help="version of an authors'-layout checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--input-size", type=input_size, default=1024, help="the graph's fixed side S (default 1024)")
    p.add_argument("--depth-model", help="also export Depth-Anything-V2: small, base, large, a repo id or folder")
    p.add_argument("--overwrite", action="store_true", help="replace graphs that exist in --out")
    p.add_argument("--no-check", action="store_true", help="skip comparing ONNX Runtime with PyTorch afterwards")


def _publish(staging: Path, out: Path, name: str) -> None:
    """Move ``name`` and its external-data file from the staging folder into ``out``, data first, so that a
    graph file in ``out`` always has its data beside it."""
    for suffix in (".data", ""):
        source = staging / f"{name}{suffix}"
        if source.exists():
            os.replace(source, out / f"{name}{suffix}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import OutputError
    from ..inference.predictor import PRETRAINED, download_weights
    from ..io import check_writable_folder
    from ..model.checkpoint import load_pdfnet
    from ..model.onnx import OnnxNetwork, export_depth_model, export_network

    out = check_writable_folder(args.out)
    targets = ["pdfnet.onnx"] + (["depth.onnx"] if args.depth_model else [])
    existing = [t for t in targets if (out / t).exists()]
    if existing and not args.overwrite:
        raise OutputError(f"{', '.join(str(out / t) for t in existing)} exist; --overwrite replaces them")
    weights = (
        download_weights(args.weights)
        if args.weights in PRETRAINED and not Path(args.weights).exists()
        else args.weights
    )
    model = load_pdfnet(weights, variant=args.variant)
    staging = Path(tempfile.mkdtemp(prefix=".pdfnet-export.", dir=out))
    try:
        print(f"exporting {weights} at {args.input_size}x{args.input_size} (this takes minutes) ...", flush=True)
        export_network(model, staging / "pdfnet.onnx", args.input_size)
        _publish(staging, out, "pdfnet.onnx")
        if args.depth_model:
            from ..data.depth import load_depth_model, resolve_depth_model
            from ..errors import DepthModelError

            print(f"exporting the depth model {args.depth_model} ...", flush=True)
            depth_model = load_depth_model(resolve_depth_model(args.depth_model))
            if depth_model.config.model_type != "depth_anything":  # a graph is run with infer_image's processing
                raise DepthModelError(
                    f"{args.depth_model} is a {depth_model.config.model_type} model: only Depth-Anything models "
                    "export to ONNX (pdfnet.onnx is written; use the model itself with --depth-model)"
                )
            export_depth_model(depth_model, staging / "depth.onnx")
            _publish(staging, out, "depth.onnx")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {', '.join(str(out / t) for t in targets)}")
    if not args.no_check:
        S = args.input_size
        torch.manual_seed(0)
        image, depth = torch.randn(2, 3, S, S), torch.rand(2, 1, S, S)
        with torch.no_grad():
            expected = model(image, depth).logits[0].sigmoid()
        got = OnnxNetwork(out / "pdfnet.onnx", ["CPUExecutionProvider"])(image, depth)
        print(f"ONNX Runtime against PyTorch at batch 2: max |dprob| = {(got - expected).abs().max().item():.2e}")
    return 0
