"""Reading images as people have them and writing results without ever leaving a half-written file.

Writes go to a hidden temporary file beside the target (``.<name>.<random>.tmp``), which is renamed into place
when complete, with the permissions the umask gives a new file. Listings ignore hidden files, so a temporary
left by a killed run is never taken for an input; :func:`remove_stale_temporaries` clears old ones.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, InputError, OutputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")  # read by pdfnet.video
TEMP_SUFFIX = ".tmp"
_PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_PIL_FORMATS |= {".webp": "WEBP", ".gif": "GIF"}

__all__ = ["ImageReadError", "read_image", "read_gray", "write_image_atomic", "write_text_atomic", "atomic_path"]


EXAMPLE_IMAGE = "chelsea.png"  # Chelsea the cat, CC0, from scikit-image's sample data


def example_image() -> Path:
    """The photo shipped with the package (``pdfnet predict`` cuts it out when given no input)."""
    from importlib import resources

    return Path(str(resources.files("pdfnet") / "assets" / EXAMPLE_IMAGE))


def _open(path: str | os.PathLike) -> Image.Image:
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ImageReadError(f"cannot read image {name}: it is a folder")
    try:
        image = Image.open(name)
        image.load()
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"cannot read image {name}: {e}") from None
    except FileNotFoundError:
        raise ImageReadError(f"no such image: {name}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
        raise ImageReadError(f"cannot read image {name}: {e}") from None
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
    """An image as (H, W, 3) uint8 RGB, upright: EXIF orientation applied; grey, palette, RGBA (alpha dropped),
    16-bit files and the first frame of animations converted.

    Raises:
        ImageReadError: naming the file, if it cannot be decoded.
    """
    image = _open(path)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the image
        pass
    try:
        image = _to_uint8(image)
        if image.mode == "P":
            image = image.convert("RGBA")
        return np.array(image.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {e}") from None


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """A single-channel map (mask or depth) as (H, W) uint8; colour files are converted to luminance and
    16-bit files scaled to 8 bits.

    Raises:
        ImageReadError: naming the file, if it cannot be decoded.
    """
    image = _to_uint8(_open(path))
    try:
        if image.mode != "L":
            image = image.convert("L")
        return np.array(image)
    except (OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {os.fspath(path)}: {e}") from None


def _new_file_mode() -> int:
    """The permissions a newly created file gets under this process's umask (0o666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; renamed into place (with the umask's permissions)
    when the block ends without error, removed otherwise, so that an interrupted run never leaves a truncated
    file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an image atomically, its format from the suffix (PNG for others); 16-bit (H, W) arrays become
    16-bit PNG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=_PIL_FORMATS.get(path.suffix.lower(), "PNG"))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> int:
    """Delete our temporary files in ``folder`` left by runs killed more than ``older_than_s`` ago (younger
    ones may belong to a run still writing); returns how many."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def is_listed(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    """A visible file with one of ``suffixes``: what folder listings take as input."""
    return not path.name.startswith(".") and path.suffix.lower() in suffixes and path.is_file()


def list_images(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; hidden files are ignored."""
    return sorted(p for p in Path(folder).iterdir() if is_listed(p, suffixes))


def expand_inputs(inputs: Iterable[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Iterator[Path]:
    """Files, folders (their files with ``suffixes``) and glob patterns, in the order given, each file once.

    Raises:
        InputError: an input that is no file, folder or match.
    """
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path, suffixes)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path().glob(item)) if not path.is_absolute() else sorted(Path("/").glob(item[1:]))
            if not found:
                raise InputError(f"no such file, folder or match: {item}")
            found = [p for p in found if p.is_file() and not p.name.startswith(".")]
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


class FolderLock:
    """An exclusive claim on an output folder for one run: ``<folder>/.pdfnet.lock`` holding the owner's pid.

    A lock whose process is gone (a killed run on this machine) is taken over. Raises OutputError naming the
    folder and the other run when it is alive.
    """

    def __init__(self, folder: str | os.PathLike, what: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".pdfnet.lock"
        self.what = what
        self.held = False

    def __enter__(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {self.folder}: {e.strerror or e}") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _alive(owner):
                    raise OutputError(
                        f"{self.folder} is in use by another {self.what} run (process {owner}); wait for it to "
                        f"finish, or delete {self.path} if that process is not a {self.what} run"
                    ) from None
                self.path.unlink(missing_ok=True)  # a killed run's lock
                continue
            except OSError as e:
                raise OutputError(f"cannot write in {self.folder}: {e.strerror or e}") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise OutputError(f"cannot lock {self.folder} (another run keeps taking it)")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "-1")
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check a file can be written in it, before any work is done.

    Raises:
        OutputError: naming the folder and the reason.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pdfnet-probe.", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {folder}: {e.strerror or e}") from None
    return folder


def check_writable_file(path: str | os.PathLike) -> Path:
    """Check a file can be written at ``path`` (its folder created), before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; expected a file path")
    check_writable_folder(path.parent if str(path.parent) else Path("."))
    return path
