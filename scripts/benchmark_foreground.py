"""Accuracy and speed of foreground colour estimation: ours against pymatting and BiRefNet's blur fusion.

    python scripts/benchmark_foreground.py                                  # 2048 and 1024, the bundled cat
    python scripts/benchmark_foreground.py --photo basket.jpg --sizes 2048  # a textured photo of yours
    pip install pymatting                                                   # to compare with it (optional)

Composites with known colours: a foreground photo F over a background B with a soft alpha (a solid core with a
sharp and a defocused edge, thousands of anti-aliased hair strands 0.25 to 1 pixel wide, and in one a
semi-transparent veil), alpha quantised to 8 bits and I = round(255 (a F + (1 - a) B)). The photos are the
bundled cat (smooth) and ``--photo`` (default: a synthetic texture); the backgrounds are the other photo, a
chroma green and a magenta-blue gradient with yellow blobs.

Every method is timed from uint8 photo and mask to uint8 colours (minimum and median of ``--repeats`` runs).
Errors are in 0..255 levels, averaged over RGB, over the pixels with 0 < alpha < 1: MAE, and wMAE weighted by
alpha (the error that shows when the cutout is laid on any background). "x pym" is the ratio to pymatting's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from pdfnet.inference.foreground import ForegroundSettings, refine_foreground
from pdfnet.io import example_image, read_image

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------------------ composites


def square(photo: np.ndarray, size: int, flip: bool = False) -> np.ndarray:
    """The photo's centre square resized to size x size, float32 in [0, 1]."""
    h, w = photo.shape[:2]
    side = min(h, w)
    crop = photo[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    crop = crop[:, ::-1] if flip else crop
    shrink = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=shrink) / 255.0, 0, 1)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    return cv2.resize(rng.random((cells, cells)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def texture(size: int, seed: int = 7) -> np.ndarray:
    """A synthetic textured photo, (size, size, 3) uint8: fine woven stripes, blotches and grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    weave = 0.5 + 0.25 * np.sin(xx * 0.9 + 3 * smooth_noise(rng, size, 8)) * np.sin(yy * 0.7)
    colour = np.stack([smooth_noise(rng, size, 5) for _ in range(3)], axis=-1)
    grain = rng.normal(0, 0.05, (size, size, 1))
    return (np.clip(0.6 * colour * weave[..., None] + 0.3 * weave[..., None] + grain, 0, 1) * 255).astype(np.uint8)


def coloured_background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "green":  # chroma green under an uneven light
        return np.clip(np.array([0.05, 0.75, 0.15]) * (0.8 + 0.3 * smooth_noise(rng, size, 4)[..., None]), 0, 1)
    t = np.clip((xx + yy) / 2, 0, 1)[..., None]  # magenta to blue, with yellow blobs
    bg = (1 - t) * np.array([0.9, 0.05, 0.75]) + t * np.array([0.05, 0.15, 0.95])
    bg[smooth_noise(rng, size, 6) > 0.62] = (0.95, 0.85, 0.05)
    return bg


def hair_alpha(rng: np.random.Generator, size: int, veil: bool = False, supersample: int = 4) -> np.ndarray:
    """(size, size) float alpha: a wobbly ellipse, sharp (sigma 1) on one side and defocused (sigma 10) on the
    other, with hair strands drawn at 4x resolution and area-averaged (0.25 to 1 pixel wide), and an optional
    smooth semi-transparent veil."""
    scale = size / 2048
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size * (0.5 + 0.04 * rng.standard_normal()), size * (0.55 + 0.04 * rng.standard_normal())
    rx, ry = size * 0.28, size * 0.24
    angle = np.arctan2(yy - cy, xx - cx)
    ph3, ph7 = rng.random() * 6, rng.random() * 6
    wobble = 1.0 + 0.10 * np.sin(3 * angle + ph3) + 0.06 * np.sin(7 * angle + ph7)
    core = (np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) / wobble < 1.0).astype(np.float32)
    sharp = cv2.GaussianBlur(core, (0, 0), 1.0 * scale + 0.3)
    soft = cv2.GaussianBlur(core, (0, 0), 10.0 * scale)
    defocus = np.clip(0.5 + 0.5 * np.cos(angle - 0.8), 0, 1) ** 2
    alpha = (1 - defocus) * sharp + defocus * soft
    canvas = np.zeros((size * supersample, size * supersample), np.uint8)
    for _ in range(int(6000 * scale)):
        theta = rng.normal(-2.0, 0.9) if rng.random() < 0.75 else rng.uniform(-np.pi, np.pi)  # mostly upper left
        radius = (1.0 + 0.10 * np.sin(3 * theta + ph3) + 0.06 * np.sin(7 * theta + ph7)) * rng.uniform(0.9, 1.0)
        px, py = cx + radius * rx * np.cos(theta), cy + radius * ry * np.sin(theta)
        direction, length = theta + rng.normal(0, 0.35), rng.uniform(15, 260) * scale
        curvature, step = rng.normal(0, 0.012) / scale, 3.0 * scale
        points = []
        for _ in range(int(length / step) + 2):
            points.append((px, py))
            px, py = px + step * np.cos(direction), py + step * np.sin(direction)
            direction += curvature + rng.normal(0, 0.03)
        points = np.round(np.array(points) * supersample * 16).astype(np.int32)  # 4 fractional bits
        thickness, value = int(rng.choice([1, 1, 2, 2, 3, 4])), int(rng.uniform(110, 255))
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, value, thickness, cv2.LINE_AA, shift=4)
    hair = np.clip(cv2.resize(canvas / np.float32(255), (size, size), interpolation=cv2.INTER_AREA) * 1.6, 0, 1)
    alpha = 1 - (1 - alpha) * (1 - hair)
    if veil:
        spot = np.clip(1 - np.hypot(xx - 0.78 * size, yy - 0.80 * size) / (0.22 * size), 0, 1)
        alpha = 1 - (1 - alpha) * (1 - 0.75 * spot * smooth_noise(rng, size, 10))
    return np.clip(alpha, 0, 1)


def composites(sizes: list[int], photo: np.ndarray, photo_name: str) -> dict[str, tuple[np.ndarray, ...]]:
    """``<name>_<size>`` -> (image, alpha, true foreground) uint8: foreground, background and alpha drawn at the
    largest size and area-downsampled to the others, then composed."""
    cat, top = read_image(example_image()), max(sizes)
    specs = [  # name, foreground, background, seed, veil
        (f"cat_on_{photo_name}", lambda r: square(cat, top), lambda r: square(photo, top), 1, False),
        (
            f"{photo_name}_on_green",
            lambda r: square(photo, top, True),
            lambda r: coloured_background(r, top, "green"),
            2,
            True,
        ),  # fmt: skip
        ("cat_on_magenta", lambda r: square(cat, top), lambda r: coloured_background(r, top, "magenta"), 3, False),
        (f"{photo_name}_on_cat", lambda r: square(photo[:, ::-1], top), lambda r: square(cat, top, True), 4, False),
    ]
    drawn = []
    for name, foreground, background, seed, veil in specs:
        rng = np.random.default_rng(seed)
        fg, bg = np.round(foreground(rng) * 255).astype(np.uint8), np.round(background(rng) * 255).astype(np.uint8)
        drawn.append((name, fg, bg, hair_alpha(rng, top, veil).astype(np.float32)))
    out = {}
    for size in sizes:
        for name, fg, bg, alpha in drawn:
            if size != top:
                fg, bg, alpha = (cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA) for x in (fg, bg, alpha))
            a8 = np.round(alpha * 255).astype(np.uint8)
            a = a8[..., None] / 255.0
            image = np.clip(np.round(a * fg + (1 - a) * bg), 0, 255).astype(np.uint8)
            out[f"{name}_{size}"] = (image, a8, fg)
    return out


# ---------------------------------------------------------------------------------------------------- methods


def blur_fusion_pass(image, fg, bg, alpha, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass of Forte and Pitie's approximate fast foreground estimation (box blurs of size ``radius``)."""
    blurred_alpha = cv2.blur(alpha, (radius, radius))[..., None]
    a = alpha[..., None]
    fg_hat = cv2.blur(fg * a, (radius, radius)) / (blurred_alpha + 1e-5)
    bg_hat = cv2.blur(bg * (1 - a), (radius, radius)) / ((1 - blurred_alpha) + 1e-5)
    return np.clip(fg_hat + a * (image - a * fg_hat - (1 - a) * bg_hat), 0, 1), bg_hat


def blur_fusion(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """BiRefNet's ``refine_foreground``: two blur-fusion passes, radius 90 then 6."""
    im, a = image.astype(np.float32) / 255, alpha.astype(np.float32) / 255
    fg, bg = blur_fusion_pass(im, im, im, a, 90)
    fg, _ = blur_fusion_pass(im, fg, bg, a, 6)
    return np.round(fg * 255).astype(np.uint8)


def methods(use_pymatting: bool) -> dict[str, Method]:
    found: dict[str, Method] = {
        "raw photo": lambda image, alpha: image,
        "blur fusion r=90,6 (BiRefNet)": blur_fusion,
    }
    if use_pymatting:
        try:
            start = time.perf_counter()
            from pymatting import estimate_foreground_ml
        except ImportError:
            print("pymatting is not installed: its rows are skipped (pip install pymatting to compare)")
        else:
            print(f"pymatting import: {time.perf_counter() - start:.1f} s (numba compiles or loads its kernels)")

            def pymatting(image, alpha):
                fg = estimate_foreground_ml(image.astype(np.float32) / 255, alpha.astype(np.float32) / 255)
                return np.clip(np.round(fg * 255), 0, 255).astype(np.uint8)

            found["pymatting estimate_foreground_ml"] = pymatting
    pymatting_model = ForegroundSettings(gradient_weight=1.0, sweeps=4, growth=1.0, max_sweeps=10)
    found["ours, pymatting's model (g=1, 4 sweeps/level)"] = lambda i, a: refine_foreground(i, a, pymatting_model)
    found["ours (default)"] = refine_foreground
    found["ours, 8 sweeps"] = lambda i, a: refine_foreground(i, a, ForegroundSettings(sweeps=8))
    return found


def errors(estimate: np.ndarray, truth: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """(MAE, alpha-weighted MAE) in 0..255 levels over the pixels with 0 < alpha < 1."""
    soft = (alpha > 0) & (alpha < 255)
    diff = np.abs(estimate.astype(np.float32) - truth.astype(np.float32)).mean(axis=2)[soft]
    weight = alpha[soft] / np.float32(255)
    return float(diff.mean()), float((weight * diff).sum() / weight.sum())


def timed(method: Method, image: np.ndarray, alpha: np.ndarray, repeats: int) -> tuple[np.ndarray, float, float]:
    """(result, minimum s, median s) of ``method(image, alpha)`` after one warm-up call."""
    result = method(image, alpha)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = method(image, alpha)
        times.append(time.perf_counter() - start)
    return result, min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 1024])
    parser.add_argument("--photo", help="a textured photo for the second foreground (default: a synthetic texture)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pymatting", action="store_true", help="skip pymatting even when installed")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    photo = read_image(args.photo) if args.photo else texture(2048)
    photo_name = Path(args.photo).stem if args.photo else "texture"
    compared = methods(not args.no_pymatting)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; times: min / median of {args.repeats} runs, uint8 in, uint8 out\n"
    )
    print(
        "| composite | method | MAE | wMAE | x pym | min s | med s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = []
    for name, (image, alpha, truth) in composites(args.sizes, photo, photo_name).items():
        results = {}
        for label, method in compared.items():
            estimate, fastest, median = timed(method, image, alpha, 1 if label == "raw photo" else args.repeats)
            results[label] = (*errors(estimate, truth, alpha), fastest, median)
        baseline = results.get("pymatting estimate_foreground_ml")
        for i, (label, (mae, wmae, fastest, median)) in enumerate(results.items()):
            ratio = f"{mae / baseline[0]:.2f}, {wmae / baseline[1]:.2f}" if baseline else "-"
            speed = "| | |" if label == "raw photo" else f"| {fastest:.3f} | {median:.3f} |"
            print(f"| {name if i == 0 else ''} | {label} | {mae:.2f} | {wmae:.2f} | {ratio} {speed}", flush=True)
            rows.append(dict(composite=name, method=label, mae=mae, wmae=wmae, min_s=fastest, median_s=median))
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": os.getloadavg()[0], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
