"""The DIS-5K folder layout: where a split's images, masks and pseudo-depth maps live.

Two layouts are in use: ``<root>/<split>/{images,masks}`` (the PDFNet release) and ``<root>/<split>/{im,gt}``
(the DIS-5K download). Depth maps sit beside them in ``depth_small``, ``depth_base``, ``depth_large`` (network
input) and ``depth_large_1024`` (the loss target), matched to images by file stem.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..io import IMAGE_SUFFIXES, list_images

IMAGE_DIRS = ("images", "im")
MASK_DIRS = ("masks", "gt")
SPLITS = ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


def _first_existing(split_dir: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (split_dir / name).is_dir():
            return split_dir / name
    if not split_dir.is_dir():
        raise DatasetError(f"no split folder {split_dir}")
    raise DatasetError(f"no {what} folder in {split_dir} (looked for {', '.join(names)})")


def image_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>/images`` or ``<root>/<split>/im``."""
    return _first_existing(Path(root) / split, IMAGE_DIRS, "image")


def mask_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>/masks`` or ``<root>/<split>/gt``."""
    return _first_existing(Path(root) / split, MASK_DIRS, "mask")


def split_images(root: str | Path, split: str) -> list[Path]:
    """The split's image files, sorted."""
    return list_images(image_dir(root, split))


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.png`` or ``.jpg`` (or another image suffix), whichever exists."""
    for suffix in (".png", ".jpg") + tuple(s for s in IMAGE_SUFFIXES if s not in (".png", ".jpg")):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None
