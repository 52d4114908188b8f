"""How sure a mask is: how much the six passes of test-time augmentation disagree, per pixel and per image.

The test-time augmentation (:meth:`~pdfnet.Predictor.logits`) runs the network six times (no flip and a
horizontal flip, each at scales 0.75, 1 and 1.25) and averages the logits: that average makes the mask, which
is unchanged here. Beside it:

- **The uncertainty map** is, per pixel, the standard deviation of the six passes' probabilities (sigmoid of
  each pass's logits; the population deviation, over six). It lies in [0, 0.5]: 0 where the passes agree, 0.5
  where three say 0 and three say 1. It is computed at the network's side, scaled so that 0.5 is 255 and rounded
  to 8 bits, and resized to the mask's size with the mask's resampling (PIL's bilinear).
- **The boundary band** is the set of pixels within ``k`` pixels of the mask's edge, on either side of it: those
  within a Euclidean distance ``k`` of a pixel on the other side, the sides being mask >= 128 and mask < 128
  (the probability's 0.5 threshold on the 8-bit mask); ``k`` is 1% of the mask's longer side, rounded, at least
  1 (10 pixels at 1024, 20 at 2048). The image's own border is not an edge.
- **The scores** of an image are means of its 8-bit uncertainty map divided by 255 (so in [0, 1], 1 meaning the
  passes disagree as much as they can): over the boundary band (``boundary``; None when the mask has no edge: no
  object, or nothing but object) and over the whole image (``overall``). They are computed from the PNGs as
  written, so anyone can recompute them from the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

MAX_SPREAD = 0.5  # the largest standard deviation of values in [0, 1]: half at 0, half at 1
BAND_FRACTION = 0.01  # the boundary band's half-width, as a fraction of the longer side
SCORES_KEY = "pdfnet-scores"  # the PNG text chunk that holds an uncertainty map's scores


def pass_spread(probabilities: torch.Tensor) -> torch.Tensor:
    """(P, B, 1, S, S) probabilities of P passes -> (B, 1, S, S) their standard deviation (over P, not P - 1),
    in [0, 0.5]."""
    return probabilities.std(dim=0, correction=0)


def spread_to_levels(spread: torch.Tensor) -> np.ndarray:
    """(S, S) or (1, S, S) standard deviation in [0, 0.5] -> (S, S) uint8, 0.5 -> 255, rounded."""
    spread = spread.detach().float().reshape(spread.shape[-2:]).cpu()
    return spread.mul(255.0 / MAX_SPREAD).round().clamp(0, 255).to(torch.uint8).numpy()


def band_width(shape: tuple[int, ...]) -> int:
    """``k``, the boundary band's half-width in pixels, for a mask of ``shape`` (H, W)."""
    return max(1, round(BAND_FRACTION * max(shape[:2])))


def boundary_band(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` (uint8) within ``width`` (default :func:`band_width`) of a pixel on
    the other side of its edge (mask >= 128 against mask < 128), Euclidean distance between pixel centres. The
    image's border is no edge (the distances are to pixels of the image only)."""
    k = band_width(mask.shape) if width is None else width
    inside = (mask >= 128).astype(np.uint8)
    # the distance of every non-zero pixel to the nearest zero one (exact Euclidean distances)
    to_outside = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_inside = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    has_edge = 0 < int(inside.sum()) < inside.size
    if not has_edge:  # all one side: no distances to speak of (OpenCV gives large numbers)
        return np.zeros(mask.shape, bool)
    return np.where(inside == 1, to_outside, to_inside) <= k + 1e-3


@dataclass
class UncertaintyScores:
    """What a reviewer sorts images by (module docstring for the definitions).

    Attributes:
        boundary: mean uncertainty over the boundary band in [0, 1]; None when the mask has no edge.
        overall: mean uncertainty over the whole image in [0, 1].
        area: mask pixels (mask >= 128).
        foreground: ``area`` over the image's pixels.
        width, height: the mask's size.
    """

    boundary: float | None
    overall: float
    area: int
    foreground: float
    width: int
    height: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> UncertaintyScores:
        values = json.loads(text)
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})

    def sort_key(self) -> tuple[float, float]:
        """Least certain first when sorted ascending: no edge first (nothing to check it by), then by boundary
        and overall uncertainty, highest first."""
        boundary = math.inf if self.boundary is None else self.boundary
        return (-boundary, -self.overall)


def score(mask: np.ndarray, uncertainty: np.ndarray) -> UncertaintyScores:
    """The scores of an (H, W) uint8 mask and its (H, W) uint8 uncertainty map."""
    if mask.shape != uncertainty.shape:
        raise ValueError(f"mask {mask.shape} and uncertainty {uncertainty.shape} differ in size")
    band = boundary_band(mask)
    levels = uncertainty.astype(np.float64) / 255.0
    area = int(np.count_nonzero(mask >= 128))
    H, W = mask.shape
    return UncertaintyScores(
        boundary=float(levels[band].mean()) if band.any() else None,
        overall=float(levels.mean()),
        area=area,
        foreground=area / (H * W),
        width=W,
        height=H,
    )


@dataclass
class Uncertainty:
    """A mask's uncertainty: the 8-bit map and its scores.

    Attributes:
        map: (H, W) uint8, the six passes' standard deviation x 510 (module docstring), at the mask's size.
        scores: :class:`UncertaintyScores` of the map and its mask.
    """

    map: np.ndarray
    scores: UncertaintyScores

    @property
    def boundary(self) -> float | None:
        return self.scores.boundary

    @property
    def overall(self) -> float:
        return self.scores.overall


def read_scores(path) -> UncertaintyScores | None:
    """The scores kept in an uncertainty PNG's text chunk, or None (no such chunk, or not readable)."""
    from PIL import Image

    try:
        with Image.open(path) as image:  # the text chunks come before the pixels: only they are read
            text = getattr(image, "text", {}).get(SCORES_KEY)
        return UncertaintyScores.from_json(text) if text else None
    except Exception:  # a damaged or foreign file: no scores
        return None


CSV_COLUMNS = (
    "rank",
    "name",
    "boundary_uncertainty",
    "image_uncertainty",
    "mask_area",
    "foreground_fraction",
    "width",
    "height",
)


Row = tuple[str, UncertaintyScores, Mapping[str, str]]  # name, scores, values of extra columns


def ranked(rows: Iterable[Row]) -> list[Row]:
    """``(name, scores, extra columns)`` sorted least certain first (ties by name)."""
    return sorted(rows, key=lambda row: (row[1].sort_key(), row[0]))


def csv_text(rows: Iterable[Row], extra: tuple[str, ...] = ()) -> str:
    """A CSV of :data:`CSV_COLUMNS` (then ``extra`` columns), one row per image, least certain first; an image
    without a boundary has an empty ``boundary_uncertainty``."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + extra)
    for rank, (name, s, more) in enumerate(ranked(rows), start=1):
        boundary = "" if s.boundary is None else f"{s.boundary:.6f}"
        values = [rank, name, boundary, f"{s.overall:.6f}", s.area, f"{s.foreground:.6f}", s.width, s.height]
        writer.writerow(values + [more.get(k, "") for k in extra])
    return out.getvalue()
