"""The ``predict`` command: images in, masks and cutouts out, one bad file never stopping the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .dis5k import find_by_stem
from .io import ImageReadError, expand_inputs, read_gray, read_image, write_image_atomic
from .predictor import Predictor, to_mask, to_rgba


def _load_predictor(args: argparse.Namespace) -> Predictor:
    depth_model = None if args.depth else args.depth_model
    options = dict(
        device=args.device, depth_model=depth_model, precision=args.precision, input_size=args.input_size, tta=args.tta
    )
    if args.weights:
        return Predictor.from_checkpoint(args.weights, variant=args.variant, **options)
    return Predictor.from_pretrained(**options)


def _write(out_dir: Path, stem: str, image: np.ndarray, prob: np.ndarray, fmt: str) -> None:
    """``<stem>.png`` for one format; ``<stem>_mask.png`` and ``<stem>_rgba.png`` for both."""
    if fmt in ("mask", "both"):
        write_image_atomic(out_dir / (f"{stem}_mask.png" if fmt == "both" else f"{stem}.png"), to_mask(prob))
    if fmt in ("rgba", "both"):
        write_image_atomic(out_dir / (f"{stem}_rgba.png" if fmt == "both" else f"{stem}.png"), to_rgba(image, prob))


def run_predict(args: argparse.Namespace) -> int:
    """Run ``python -m pdfnet predict``; returns the exit status (1 if any input failed)."""
    from .cli import example_image

    try:
        inputs = list(expand_inputs(args.inputs)) if args.inputs else [example_image()]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        predictor = _load_predictor(args)
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    failed: list[str] = []
    bar = tqdm(total=len(inputs), desc="predict", unit="img")
    for start in range(0, len(inputs), args.batch_size):
        paths, images, depths = [], [], []
        for path in inputs[start : start + args.batch_size]:
            try:
                image = read_image(path)
                depth = _read_depth(args.depth, path) if args.depth else None
            except (ImageReadError, FileNotFoundError) as e:
                failed.append(str(e))
                tqdm.write(f"error: {e}", file=sys.stderr)
                bar.update(1)
                continue
            paths.append(path)
            images.append(image)
            depths.append(depth)
        if paths:
            for path, image, prob in zip(paths, images, predictor.predict_batch(images, depths)):
                _write(out_dir, path.stem, image, prob, args.fmt)
                bar.update(1)
    bar.close()
    done = len(inputs) - len(failed)
    print(f"wrote {done} result(s) to {out_dir}" + (f"; {len(failed)} input(s) failed:" if failed else ""))
    for message in failed:
        print(f"  {message}", file=sys.stderr)
    return 1 if failed else 0


def _read_depth(folder: str, image_path: Path) -> np.ndarray:
    path = find_by_stem(Path(folder), image_path.stem)
    if path is None:
        raise FileNotFoundError(f"no depth map for {image_path} in {folder} (looked for {image_path.stem}.png/.jpg)")
    return read_gray(path)
