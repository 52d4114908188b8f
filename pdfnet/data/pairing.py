"""A folder of photos and a folder of masks, paired by file stem and checked before anything is made of them.

Every problem is found in one pass and reported together (one line each), so that a user fixes the folders
once: an image without a mask, a mask without an image, two files of one stem, a file that cannot be read, a
mask of another size than its image (the image's upright size, EXIF orientation applied as it is read), a
mask that is not a mask (a photo, a label map of 0 and 1 whose object would read as background, a cutout whose
object is in its transparency), and a photo too elongated for the depth model.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError, ImageReadError
from ..io import list_images, read_gray

# A mask is black background and white object, with grey only along edges (anti-aliasing, soft hair): a map with
# more than this share of its pixels between GREY_LEVELS is taken for a photo, not a mask.
MAX_GREY_FRACTION = 0.25
GREY_LEVELS = (32, 223)
# Masks are binarised at > 128 (training, the metrics): a non-empty mask whose brightest pixel is at most this
# is a label map (0 and 1, ...) whose object would vanish.
LABEL_MAP_MAX = 128
MAX_LISTED = 10  # problems shown of each kind
MOSTLY_WHITE = 0.7  # a share of object pixels that, in most masks of a folder, suggests inverted masks


@dataclass(frozen=True)
class ImagePair:
    """An image and its mask (same file stem)."""

    image: Path
    mask: Path

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass
class PairCheck:
    """What :func:`check_pairs` found: the usable pairs, the problems as (kind, one line), and each usable
    mask's share of object pixels (> 128) by stem (an empty or mostly white mask is usable, but worth a note)."""

    pairs: list[ImagePair]
    problems: list[tuple[str, str]]
    foreground: dict[str, float]


def upright_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image as :func:`pdfnet.io.read_image` returns it (EXIF orientation applied), decoding the
    whole file so that a truncated one is found now.

    Raises:
        ImageReadError: naming the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            W, H = image.size
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block: read_image ignores it too
                orientation = 1
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from None
    return (W, H) if orientation in (5, 6, 7, 8) else (H, W)


def mask_problem(mask: np.ndarray) -> str | None:
    """Why an (H, W) uint8 map is not a mask, or None."""
    grey = float(np.count_nonzero((mask >= GREY_LEVELS[0]) & (mask <= GREY_LEVELS[1]))) / max(mask.size, 1)
    if grey > MAX_GREY_FRACTION:
        return (
            f"not a mask: {grey:.0%} of its pixels are grey (a mask is black background and white object); is it "
            "a photo?"
        )
    top = int(mask.max()) if mask.size else 0
    if 0 < top <= LABEL_MAP_MAX:
        return (
            f"not a black-and-white mask: its brightest value is {top} (a label map?); save the object as 255 "
            "(white) and the background as 0"
        )
    return None


def _stems(files: list[Path], folder: Path, what: str, problems: list[tuple[str, str]]) -> dict[str, Path]:
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append(("two files", f"two {what}s of stem {stem!r} in {folder}: {names}; keep one"))
    return {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}


def _object_in_alpha(path: Path, grey: np.ndarray) -> bool:
    """Whether a mask file is a cutout: a uniform grey image whose transparency varies (the object's outline)."""
    if int(grey.max()) - int(grey.min()) > 16:
        return False
    with Image.open(path) as image:
        if "A" not in image.getbands() and "transparency" not in image.info:
            return False
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return int(alpha.max()) - int(alpha.min()) > 128


def _check_one(pair: ImagePair) -> tuple[tuple[str, str] | None, float]:
    """((kind, problem) or None, the mask's share of object pixels) of one pair."""
    from .depth import MAX_INPUT_AREA, lower_bound_size

    try:
        size = upright_size(pair.image)
        mask = read_gray(pair.mask)
    except ImageReadError as e:
        return ("unreadable", str(e)), 0
    try:
        cutout = _object_in_alpha(pair.mask, mask)
    except (OSError, ValueError) as e:  # read once already: a file that changed meanwhile
        return ("unreadable", f"cannot read image {pair.mask}: {e}"), 0
    h, w = lower_bound_size(*size)
    if h * w > MAX_INPUT_AREA * 518**2:
        return ("shape", f"image {pair.image} ({size[1]}x{size[0]}) is too elongated for the depth model; crop it"), 0
    if mask.shape != size:
        sizes = f"is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} is {size[1]}x{size[0]}"
        return ("size", f"mask {pair.mask} {sizes}"), 0
    if cutout:
        why = "a cutout: its object is in its transparency (alpha channel); save the alpha as a black-and-white mask"
        return ("not a mask", f"mask {pair.mask} is {why}"), 0
    why = mask_problem(mask)
    if why:
        return ("not a mask", f"mask {pair.mask} is {why}"), 0
    return None, float(np.count_nonzero(mask > 128)) / mask.size


def check_pairs(images: str | os.PathLike, masks: str | os.PathLike, workers: int | None = None) -> PairCheck:
    """Pair the images of ``images`` with the masks of ``masks`` by file stem and check every pair.

    Args:
        workers: threads reading files (default: the CPU count; decoding releases the GIL).

    Returns:
        the pairs without problems (sorted by stem), and every problem found.
    """
    images, masks = Path(images), Path(masks)
    problems: list[tuple[str, str]] = []
    for folder, what in ((images, "image"), (masks, "mask")):
        if not folder.is_dir():
            missing = f"no {what} folder {folder}" if not folder.exists() else f"{folder} is not a folder"
            problems.append(("folder", missing))
    if problems:
        return PairCheck([], problems, {})
    if images.resolve() == masks.resolve():
        return PairCheck([], [("folder", f"{images} is given as both the image and the mask folder")], {})
    image_files, mask_files = list_images(images), list_images(masks)
    problems += [
        ("folder", f"no {w}s in {f}")
        for f, w, files in ((images, "image", image_files), (masks, "mask", mask_files))
        if not files
    ]
    by_image, by_mask = _stems(image_files, images, "image", problems), _stems(mask_files, masks, "mask", problems)
    for s in sorted(s for s in by_image if s not in by_mask):
        problems.append(("no mask", f"image {by_image[s]} has no mask in {masks} (no file of stem {s!r})"))
    for s in sorted(s for s in by_mask if s not in by_image):
        problems.append(("no image", f"mask {by_mask[s]} has no image in {images} (no file of stem {s!r})"))
    candidates = [ImagePair(by_image[s], by_mask[s]) for s in sorted(by_image) if s in by_mask]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_check_one, candidates))
    pairs = [pair for pair, (problem, _) in zip(candidates, results) if problem is None]
    problems += [problem for problem, _ in results if problem is not None]
    share = {pair.stem: object_share for pair, (problem, object_share) in zip(candidates, results) if problem is None}
    return PairCheck(pairs, problems, share)


def mask_notes(foreground: dict[str, float]) -> list[str]:
    """Remarks on usable masks: those without an object, and masks that look inverted (mostly white)."""
    found = []
    empty = sorted(stem for stem, share in foreground.items() if share == 0)
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        found.append(f"{len(empty)} mask(s) have no object (all black): {shown}; they are trained as such")
    white = [stem for stem, share in foreground.items() if share > MOSTLY_WHITE]
    if foreground and len(white) > len(foreground) / 2:
        found.append(
            f"{len(white)} of {len(foreground)} masks are mostly white (object over {MOSTLY_WHITE:.0%} of the "
            "picture): the object must be white and the background black; are they inverted?"
        )
    return found


def raise_problems(problems: list[tuple[str, str]], what: str) -> None:
    """A DatasetError listing ``problems``, one line each (at most :data:`MAX_LISTED` of each kind, then how
    many more), if there are any."""
    if not problems:
        return
    lines, counts = [], {}
    for kind, text in problems:
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= MAX_LISTED:
            lines.append(text)
    lines += [f"... and {n - MAX_LISTED} more of kind {kind!r}" for kind, n in counts.items() if n > MAX_LISTED]
    raise DatasetError(f"{len(problems)} problem(s) with {what}; nothing was written:\n  " + "\n  ".join(lines))
