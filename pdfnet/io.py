"""Reading images as people have them and writing results without ever leaving a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An input file that cannot be read as an image; the message names the file."""


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {e}") from e
    return image


def _to_uint8(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer and float single-channel images scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and array.max() <= 1.0 else (65535.0 if array.max() > 255 else 255.0)
        array = array / top * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB, upright: EXIF orientation applied; grey, palette, RGBA (alpha dropped)
    and 16-bit files converted.

    Raises:
        ImageReadError: naming the file, if it cannot be decoded.
    """
    image = _open(path)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the image
        pass
    image = _to_uint8(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"))


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """A single-channel map (mask or depth) as (H, W) uint8; colour files are converted to luminance and
    16-bit files scaled to 8 bits.

    Raises:
        ImageReadError: naming the file, if it cannot be decoded.
    """
    image = _to_uint8(_open(path))
    if image.mode != "L":
        image = image.convert("L")
    return np.array(image)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; renamed into place when the block ends
    without error, removed otherwise, so that an interrupted run never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a PNG (or any PIL format, by suffix) atomically; 16-bit (H, W) arrays become 16-bit PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(inputs: Iterable[str]) -> Iterator[Path]:
    """Files, folders (their images) and glob patterns, in the order given, each file once."""
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path().glob(item)) if not path.is_absolute() else sorted(Path("/").glob(item[1:]))
            if not found:
                raise FileNotFoundError(f"no such file, folder or match: {item}")
            found = [p for p in found if p.is_file()]
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
