"""Dataset folder layouts: where a split's images, masks and pseudo-depth maps live.

A split is named by a known name (``DIS-TR``, ``HRSOD-TR``, ``DUTS-TE``, ``ECSSD``, ...: :data:`KNOWN_SPLITS`)
and found under a data root that holds either the split folders themselves (``data/DIS5K`` with ``DIS-TR/``) or
one folder per dataset (``data`` with ``DIS5K/``, ``HRSOD/``, ``UHRSD/``, ``DUTS/``, ``ECSSD/``, ...), in the
layout of each official download or a common re-packaging (``<split>/{images,masks}``, ``{im,gt}``,
``{Imgs,GT}``, ...). ``PATH:NAME`` names a split in a folder of one's own (PATH relative to the root or
absolute): PATH itself or ``PATH/NAME`` holding images and masks in one of the generic layouts, or PATH a split
file (YAML, as ``pdfnet finetune`` writes: :func:`write_split_file`) naming an image folder, a mask folder, a
depth folder and the file stems of the split's images.
``IMAGES.txt+MASKS.txt`` (or ``IMAGES.txt+MASKS.txt:NAME``) names a split by two list files (:func:`find_list_split`).

Masks are matched to images by file stem. Depth maps sit in ``<depth base>/<depth folder>/<stem>.png`` (or the
authors' ``.jpg``): the depth base is the split's own folder (``DIS-TR/``, ``DUTS-TE/``, ``UHRSD_TR_2K/``), the
dataset folder for single-split sets (``ECSSD/``, ``PASCAL-S/``), and ``HRSOD_train_depth/`` or
``HRSOD_test_depth/`` beside HRSOD's shared image folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import DatasetError
from ..io import IMAGE_SUFFIXES, list_images, write_text_atomic

# (images, masks) folder names of the common re-packagings, tried inside a split's folder: the PDFNet release,
# the DIS-5K download, UHRSD's download, MINet, PoolNet/F3Net-style packs and others.
GENERIC_PAIRS = (
    ("images", "masks"),
    ("im", "gt"),
    ("image", "mask"),
    ("Image", "Mask"),
    ("Imgs", "GT"),
    ("Image", "GT"),
    ("imgs", "gt"),
    ("img", "gt"),
)


@dataclass(frozen=True)
class Layout:
    """Where one split lies inside a dataset folder: its image and mask folders and the folder its depth folders
    go in ("" is the dataset folder itself), all relative to the dataset folder."""

    images: str
    masks: str
    depth_base: str


def _in_split_folder(folder: str, pairs: tuple[tuple[str, str], ...] = GENERIC_PAIRS) -> tuple[Layout, ...]:
    """``folder/{images,masks}`` and the other pairs, depth maps in ``folder/``."""
    return tuple(Layout(f"{folder}/{i}", f"{folder}/{m}", folder) for i, m in pairs)


def _whole_folder(pairs: tuple[tuple[str, str], ...]) -> tuple[Layout, ...]:
    """A dataset that is one split: images and masks directly in the dataset folder, depth maps there too."""
    return tuple(Layout(i, m, "") for i, m in pairs)


@dataclass(frozen=True)
class KnownSplit:
    """A split of a published dataset.

    Attributes:
        dataset: the dataset it belongs to (results.md has one table per dataset).
        folders: names the dataset's folder goes by under a data root (the data root itself is tried last).
        layouts: where the split lies inside that folder, most specific first.
    """

    dataset: str
    folders: tuple[str, ...]
    layouts: tuple[Layout, ...]


def _dis(split: str) -> KnownSplit:
    # the PDFNet release: DIS-TR/{images,masks}; the DIS-5K download (DIS5K/DIS-TR/{im,gt}); the authors'
    # code reads DATA/DIS-DATA
    return KnownSplit("DIS-5K", ("DIS5K", "DIS-5K", "DIS-DATA"), _in_split_folder(split))


def _hrsod(split: str, official: str) -> KnownSplit:
    # the download (HRSOD_release.zip): HRSOD_{train,test} beside HRSOD_{train,test}_mask, one folder for both
    # splits, so the depth maps get a folder of their own; the authors' code reads HRSOD_test/{images,masks}
    layouts = (Layout(official, f"{official}_mask", f"{official}_depth"),)
    layouts += _in_split_folder(split) + _in_split_folder(official)
    return KnownSplit("HRSOD", ("HRSOD", "HRSOD_release", "HRSOD/HRSOD_release"), layouts)


def _uhrsd(split: str, official: str) -> KnownSplit:
    # the download (from PGNet's authors): UHRSD_TR_2K/{image,mask}, UHRSD_TE_2K/{image,mask}
    return KnownSplit("UHRSD", ("UHRSD",), _in_split_folder(official) + _in_split_folder(split))


def _duts(split: str) -> KnownSplit:
    # the download (DUTS-TR.zip, DUTS-TE.zip): DUTS-TR/{DUTS-TR-Image,DUTS-TR-Mask}
    pairs = ((f"{split}-Image", f"{split}-Mask"),) + GENERIC_PAIRS
    return KnownSplit("DUTS", ("DUTS",), _in_split_folder(split, pairs))


def _single(name: str, folders: tuple[str, ...], official: tuple[str, str] | None) -> KnownSplit:
    pairs = ((official,) if official else ()) + GENERIC_PAIRS
    return KnownSplit(name, (name, *folders), _whole_folder(pairs))


KNOWN_SPLITS: dict[str, KnownSplit] = {
    **{s: _dis(s) for s in ("DIS-TR", "DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")},
    "HRSOD-TR": _hrsod("HRSOD-TR", "HRSOD_train"),
    "HRSOD-TE": _hrsod("HRSOD-TE", "HRSOD_test"),
    "UHRSD-TR": _uhrsd("UHRSD-TR", "UHRSD_TR_2K"),
    "UHRSD-TE": _uhrsd("UHRSD-TE", "UHRSD_TE_2K"),
    "DUTS-TR": _duts("DUTS-TR"),
    "DUTS-TE": _duts("DUTS-TE"),
    # DUT-OMRON-image.zip and DUT-OMRON-gt-pixelwise.zip.zip unpack to these two folders
    "DUT-OMRON": _single("DUT-OMRON", ("DUT_OMRON", "DUTOMRON", "DUT-O"), ("DUT-OMRON-image", "pixelwiseGT-new-PNG")),
    # HKU-IS.rar: imgs/ (PNG photos) and gt/
    "HKU-IS": _single("HKU-IS", ("HKU_IS", "HKUIS"), None),
    # images.zip and ground_truth_mask.zip of the CUHK page
    "ECSSD": _single("ECSSD", (), ("images", "ground_truth_mask")),
    # salObj.zip holds several datasets: PASCAL-S is datasets/imgs/pascal with datasets/masks/pascal
    "PASCAL-S": _single(
        "PASCAL-S", ("PASCALS", "PASCAL_S", "salObj"), ("datasets/imgs/pascal", "datasets/masks/pascal")
    ),
}
SPLITS = tuple(KNOWN_SPLITS)


@dataclass(frozen=True)
class Split:
    """A split found on disk.

    Attributes:
        name: the split's name (the NAME of ``PATH:NAME``): folder names of predictions, rows of tables.
        spec: as the user wrote it, for commands in messages.
        images, masks: its image and mask folders.
        depth_base: the folder its depth folders (``depth_large``, ...) are in.
        dataset: the dataset it belongs to (its own name for splits of one's own).
        stems: the file stems of its images when it is a part of the image folder (a split file's), else None
            (all of them).
        listed: for a split given by list files, its (image, mask) pairs in list order (``images`` and ``masks``
            are then the folders of the two list files); None for a folder split.
    """

    name: str
    spec: str
    images: Path
    masks: Path
    depth_base: Path
    dataset: str
    stems: tuple[str, ...] | None = None
    listed: tuple[tuple[Path, Path], ...] | None = None

    def __str__(self) -> str:
        return self.spec

    def depth_dir(self, folder: str) -> Path:
        return self.depth_base / folder

    def image_files(self) -> list[Path]:
        """The split's image files, sorted.

        Raises:
            DatasetError: there are none, or an image of its stems is not in the image folder.
        """
        if self.listed is not None:
            return [image for image, _ in self.listed]
        images = list_images(self.images)
        if self.stems is not None:
            by_stem = {p.stem: p for p in images}
            missing = [s for s in self.stems if s not in by_stem]
            if missing:
                shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                raise DatasetError(
                    f"{len(missing)} image(s) of split {self.spec} are no longer in {self.images}: {shown}"
                )
            images = sorted(by_stem[s] for s in self.stems)
        if not images:
            raise DatasetError(f"no images in {self.images} (split {self.spec})")
        return images

    def pairs(self) -> list[tuple[Path, Path]]:
        """(image, mask) of every image, matched by stem (a PNG mask first where several suffixes exist).

        Raises:
            DatasetError: no images, or an image without a mask, naming the file.
        """
        if self.listed is not None:
            return list(self.listed)
        masks: dict[str, Path] = {}
        for path in sorted(list_images(self.masks), key=lambda p: p.suffix.lower() != ".png"):
            masks.setdefault(path.stem, path)
        pairs = []
        for image in self.image_files():
            if image.stem not in masks:
                raise DatasetError(f"no mask for {image} in {self.masks}")
            pairs.append((image, masks[image.stem]))
        return pairs

    def mask_files(self) -> Path | dict[str, Path]:
        """What to score predictions against: the mask folder, or a listed split's mask file for each image stem
        (the predictions' names)."""
        return self.masks if self.listed is None else {image.stem: mask for image, mask in self.listed}


class SplitNotFoundError(DatasetError):
    """A split with a known name (or a ``PATH:NAME``) whose folders are not there."""


def parse_split(spec: str) -> tuple[str | None, str]:
    """``"NAME"`` -> (None, NAME); ``"PATH:NAME"`` -> (PATH, NAME)."""
    if ":" in spec:
        path, name = spec.rsplit(":", 1)
        if not path or not name:
            raise DatasetError(f"split {spec!r}: expected NAME or PATH:NAME")
        return path, name
    if not spec:
        raise DatasetError("empty split name")
    return None, spec


def dataset_of(name: str) -> str:
    """The dataset a split name belongs to (the name itself for splits of one's own)."""
    known = KNOWN_SPLITS.get(name)
    return known.dataset if known else name


def _candidates(root: Path, path: str | None, name: str) -> list[tuple[Path, Layout]]:
    """(dataset folder, layout) pairs to try, in order."""
    known = KNOWN_SPLITS.get(name)
    layouts = known.layouts if known else ()
    if path is not None:
        base = root / path  # an absolute path stays as it is
        return [(base, layout) for layout in layouts + _whole_folder(GENERIC_PAIRS) + _in_split_folder(name)]
    found = [(root / folder, layout) for folder in (known.folders if known else ()) for layout in layouts]
    for layout in layouts + _in_split_folder(name):
        # generic folders straight under the root would be any dataset's: only a split's own folder there
        if not (layout.depth_base == "" and (layout.images, layout.masks) in GENERIC_PAIRS):
            found.append((root, layout))
    return found


def find_split(root: str | Path, spec: str | Split) -> Split:
    """The folders of split ``spec`` (``NAME``, ``PATH:NAME`` or ``IMAGES.txt+MASKS.txt[:NAME]``; a :class:`Split`
    is returned as it is) under data root ``root``.

    Raises:
        SplitNotFoundError: a known name (or ``PATH:NAME``) whose image and mask folders are not there, naming
            where they were looked for.
        DatasetError: an unknown name that is not a folder of the root either, listing the known ones; a split
            file that cannot be read.
    """
    if isinstance(spec, Split):
        return spec
    root = Path(root)
    if parse_list_split(spec) is not None:
        return find_list_split(root, spec)
    path, name = parse_split(spec)
    if path is not None and (root / path).is_file():
        return read_split_file(root / path, name, spec)
    candidates = _candidates(root, path, name)
    half = None  # the first image folder found without its mask folder
    for base, layout in candidates:
        images, masks = base / layout.images, base / layout.masks
        if images.is_dir() and masks.is_dir():
            depth_base = base / layout.depth_base if layout.depth_base else base
            return Split(name, spec, images, masks, depth_base, dataset_of(name))
        if images.is_dir() and half is None:
            half = images
    if path is None and name not in KNOWN_SPLITS and not (root / name).is_dir():
        raise DatasetError(
            f"unknown split {name!r} under {root}; known: {', '.join(SPLITS)}; or PATH:NAME for a folder of your own "
            "with images/ and masks/"
        )
    if half is not None:
        looked = dict.fromkeys(str(base / layout.masks) for base, layout in candidates if base / layout.images == half)
        raise SplitNotFoundError(f"no mask folder for {half} (split {spec}); looked for {', '.join(looked)}")
    examples = [f"{base / layout.images} + {layout.masks}" for base, layout in candidates[:1]]
    if path is None and name in KNOWN_SPLITS:
        examples.append(f"{root / name}/images + masks")
    raise SplitNotFoundError(
        f"no split {spec} under {root} (expected e.g. {' or '.join(examples)}; README.md, Other datasets, lists "
        "the layouts)"
    )


SPLIT_FILE_KEYS = ("images", "masks", "depth", "stems")


def write_split_file(path: str | Path, images: Path, masks: Path, depth_base: Path, stems: list[str]) -> None:
    """Write a split file: the images of ``images`` whose stems are ``stems``, their masks in ``masks`` (matched
    by stem) and their depth folders in ``depth_base``; folders are stored absolute."""
    data = {
        "images": str(Path(images).resolve()),
        "masks": str(Path(masks).resolve()),
        "depth": str(Path(depth_base).resolve()),
        "stems": sorted(stems),
    }
    header = (
        "# A split of one's own (pdfnet.data.layout): images and masks matched by stem; depth maps in depth/<folder>\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(data, sort_keys=False))


def read_split_file(path: Path, name: str, spec: str) -> Split:
    """The split a split file describes (see :func:`write_split_file`).

    Raises:
        DatasetError: the file cannot be read or lacks a key, naming it.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read split file {path}: {e}") from None
    if not isinstance(data, dict) or any(k not in data for k in SPLIT_FILE_KEYS):
        raise DatasetError(f"{path} is not a split file (expected the keys {', '.join(SPLIT_FILE_KEYS)})")
    stems = data["stems"]
    if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
        raise DatasetError(f"{path}: stems must be a list of file stems")
    folders = [Path(str(data[k])) for k in ("images", "masks", "depth")]
    for folder, what in zip(folders[:2], ("image", "mask")):
        if not folder.is_dir():
            raise SplitNotFoundError(f"no {what} folder {folder} (split file {path})")
    return Split(name, spec, folders[0], folders[1], folders[2], name, tuple(stems))


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.png`` or ``.jpg`` (or another image suffix), whichever exists."""
    for suffix in (".png", ".jpg") + tuple(s for s in IMAGE_SUFFIXES if s not in (".png", ".jpg")):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------- list files

# IMAGES.txt+MASKS.txt, optionally :NAME (a name without ':' or '/')
_LIST_SPLIT = re.compile(r"^(?P<images>.+\.txt)\+(?P<masks>.+\.txt)(?::(?P<name>[^:/]+))?$")


def parse_list_split(spec: str) -> tuple[str, str, str] | None:
    """``"IMAGES.txt+MASKS.txt[:NAME]"`` -> (IMAGES.txt, MASKS.txt, NAME, by default the image list's stem);
    None for other specs."""
    found = _LIST_SPLIT.match(spec)
    if found is None:
        return None
    return found["images"], found["masks"], found["name"] or Path(found["images"]).stem


def read_path_list(path: Path, what: str) -> list[Path]:
    """The files a list file names, one per line, relative to the list file's folder (absolute paths as they
    are); blank lines and lines starting with ``#`` are skipped.

    Raises:
        DatasetError: the list file is missing or unreadable, or a listed file does not exist (naming the list
            file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SplitNotFoundError(f"no {what} list {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read the {what} list {path}: {getattr(e, 'strerror', None) or e}") from None
    files = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        file = path.parent / entry  # an absolute entry stays as it is
        if not file.is_file():
            raise DatasetError(f"{path}:{number}: no such file {file}")
        files.append(file)
    if not files:
        raise DatasetError(f"the {what} list {path} names no files")
    return files


def find_list_split(root: str | Path, spec: str) -> Split:
    """A split given by two list files, ``IMAGES.txt+MASKS.txt[:NAME]`` (paths relative to ``root`` or
    absolute): the image on line i of one goes with the mask on line i of the other (blank and ``#`` lines
    aside); depth maps go beside the image list (``<its folder>/depth_large/<stem>.png``), so image stems must
    be unique.

    Raises:
        SplitNotFoundError: a list file is missing.
        DatasetError: a listed file is missing, the lists differ in length, or two images share a stem; one line
            naming the file.
    """
    parsed = parse_list_split(spec)
    if parsed is None:
        raise DatasetError(f"split {spec!r}: expected IMAGES.txt+MASKS.txt or IMAGES.txt+MASKS.txt:NAME")
    image_list, mask_list = (Path(root) / p for p in parsed[:2])
    images, masks = read_path_list(image_list, "image"), read_path_list(mask_list, "mask")
    if len(images) != len(masks):
        raise DatasetError(
            f"{image_list} lists {len(images)} images but {mask_list} lists {len(masks)} masks (split {spec}): "
            "line by line, each image goes with the mask on the same line"
        )
    seen: dict[str, Path] = {}
    for image in images:
        other = seen.setdefault(image.stem, image)
        if other != image:
            raise DatasetError(
                f"{image_list} lists {other} and {image}, two images named {image.stem}: their depth maps and "
                "predictions would have one name; rename one"
            )
    name = parsed[2]
    return Split(
        name, spec, image_list.parent, mask_list.parent, image_list.parent, name, listed=tuple(zip(images, masks))
    )
