"""``pdfnet predict``: images in, masks and cutouts out; one bad file never stops the rest, finished outputs are
kept (a rerun continues where an interrupted one stopped) and inputs are never overwritten."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.depth import DEFAULT_DEPTH_MODEL, LICENSE_NOTE
from ..errors import InputError, OutputError, PDFNetError
from ..io import (
    FolderLock,
    check_writable_folder,
    example_image,
    expand_inputs,
    read_gray,
    read_image,
    write_image_atomic,
)
from .options import add_device_options, input_size, positive_int

HELP = "cut the main object out of images"
FORMATS = ("rgba", "mask", "both")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Cut the main object out of photos: RGBA cutouts or 8-bit masks at each photo's size."
    p.epilog = LICENSE_NOTE
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns (default: the bundled example)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument(
        "--weights",
        help="base (default: the authors' DIS-5K model from the Hub), general, a checkpoint file, or a graph of "
        "pdfnet export (.onnx, run by ONNX Runtime)",
    )
    p.add_argument("--variant", choices=["release", "cvpr"], help="version of an authors'-layout checkpoint")
    p.add_argument(
        "--depth-model",
        default=DEFAULT_DEPTH_MODEL,
        help="Depth-Anything-V2: small (Apache-2.0), base, large (default; both CC-BY-NC-4.0), a repo id or folder",
    )
    p.add_argument("--depth", help="folder of ready-made depth maps named by input stem (skips the depth model)")
    p.add_argument("--format", choices=FORMATS, default="rgba", dest="fmt", help="rgba (default), mask or both")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        help="the side images are resized to for the network: a multiple of 256; 1024 (default) is what the "
        "model was trained at, and outputs always have each input's size",
    )
    p.add_argument("--tta", action="store_true", help="the authors' test-time augmentation (flips x 3 scales)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (default: skip them)")
    add_device_options(p)


def output_names(stem: str, fmt: str) -> dict[str, str]:
    """``<stem>.png`` for one format; ``<stem>_mask.png`` and ``<stem>_rgba.png`` for both."""
    if fmt == "both":
        return {"mask": f"{stem}_mask.png", "rgba": f"{stem}_rgba.png"}
    return {fmt: f"{stem}.png"}


def plan_outputs(inputs: list[Path], out_dir: Path, fmt: str) -> dict[Path, dict[str, Path]]:
    """Every input's output files. Raises OutputError, before any work, when an output would replace an input,
    the output folder is an input's folder, or two inputs would write the same file."""
    out_resolved = out_dir.resolve()
    input_dirs = {p.resolve().parent for p in inputs}
    if out_resolved in input_dirs:
        raise OutputError(f"--out {out_dir} is a folder of inputs: its outputs would mix with them; choose another")
    plan, owners = {}, {}
    for path in inputs:
        files = {kind: out_dir / name for kind, name in output_names(path.stem, fmt).items()}
        for target in files.values():
            other = owners.setdefault(target.resolve(), path)
            if other != path:
                raise OutputError(
                    f"{other} and {path} would both be written to {target} (same name); run them separately with "
                    "different --out folders, or rename one"
                )
        plan[path] = files
    return plan


def _load_predictor(args: argparse.Namespace):
    from ..inference.predictor import PRETRAINED, Predictor

    depth_model = None if args.depth else args.depth_model
    options = dict(
        device=args.device, depth_model=depth_model, precision=args.precision, input_size=args.input_size, tta=args.tta
    )
    if options["input_size"] is None:  # the graph's own size for ONNX, else the paper's 1024
        options["input_size"] = None if (args.weights or "").endswith(".onnx") else 1024
    weights = args.weights or "base"
    if weights.endswith(".onnx"):  # a graph of pdfnet export, run by ONNX Runtime
        del options["device"]
        return Predictor.from_onnx(weights, **options)
    if weights in PRETRAINED and not Path(weights).exists():
        return Predictor.from_pretrained(weights, **options)
    return Predictor.from_checkpoint(weights, variant=args.variant, **options)


def _read_depth(folder: str, image_path: Path, shape: tuple[int, ...]):
    from ..data.layout import find_by_stem

    path = find_by_stem(Path(folder), image_path.stem)
    if path is None:
        raise InputError(f"no depth map for {image_path} in {folder} (looked for {image_path.stem}.png/.jpg)")
    depth = read_gray(path)
    if depth.shape != tuple(shape[:2]):
        raise InputError(
            f"depth map {path} is {depth.shape[1]}x{depth.shape[0]} but {image_path} is {shape[1]}x{shape[0]}"
        )
    return depth


def run(args: argparse.Namespace) -> int:
    """Run ``pdfnet predict``; returns the exit status (1 if any input failed)."""
    from tqdm import tqdm

    from ..inference.predictor import to_rgba

    inputs = list(expand_inputs(args.inputs)) if args.inputs else [example_image()]
    if not inputs:
        raise InputError(f"no images in {' '.join(args.inputs)}")
    out_dir = check_writable_folder(args.out)
    plan = plan_outputs(inputs, out_dir, args.fmt)
    todo = [p for p in inputs if args.overwrite or not all(f.exists() for f in plan[p].values())]
    skipped = len(inputs) - len(todo)
    if not todo:
        print(f"all {len(inputs)} output(s) already exist in {out_dir}; nothing to do (--overwrite redoes them)")
        return 0
    with FolderLock(out_dir, "predict"):
        predictor = _load_predictor(args)
        failed: list[str] = []
        written = 0
        bar = tqdm(total=len(todo), desc="predict", unit="img")
        for start in range(0, len(todo), args.batch_size):
            paths, images, depths = [], [], []
            for path in todo[start : start + args.batch_size]:
                try:
                    image = read_image(path)
                    depth = _read_depth(args.depth, path, image.shape) if args.depth else None
                    if depth is None and predictor.depth_estimator is not None:
                        predictor.depth_estimator.input_shape(image)  # refuse unusable shapes up front
                except PDFNetError as e:
                    failed.append(str(e) if str(path) in str(e) else f"{path}: {e}")
                    tqdm.write(f"error: {failed[-1]}", file=sys.stderr)
                    bar.update(1)
                    continue
                paths.append(path)
                images.append(image)
                depths.append(depth)
            if not paths:
                continue
            for path, image, mask in zip(paths, images, predictor.predict_masks(images, depths)):
                files = plan[path]
                if "mask" in files:
                    write_image_atomic(files["mask"], mask)
                if "rgba" in files:
                    write_image_atomic(files["rgba"], to_rgba(image, mask))
                written += 1
                bar.update(1)
        bar.close()
    note = f"; {skipped} already done, skipped (--overwrite redoes them)" if skipped else ""
    print(f"wrote {written} result(s) to {out_dir}{note}" + (f"; {len(failed)} input(s) failed:" if failed else ""))
    for message in failed:
        print(f"  {message}", file=sys.stderr)
    return 1 if failed else 0
