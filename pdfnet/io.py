"""Reading images as people have them and writing results without ever leaving a half-written file.

Writes go to a hidden temporary file beside the target (``.<name>.<host>-<pid>.<random>.tmp``), which is renamed
into place when complete, with the permissions the umask gives a new file. Listings ignore hidden files, so a
temporary left by a killed run is never taken for an input, and the first write of a process into a folder removes
the temporaries there whose writer is gone (:func:`remove_stale_temporaries`). Output folders are created when the
first file is written into them, and a run's lock (:class:`FolderLock`) removes the folders it created when they
are still empty at its end: a run that fails leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import socket
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


def _host_tag() -> str:
    """This machine's name as it appears in temporary file names (letters, digits, ``_`` and ``-`` only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


# .<name>.<host>-<pid>.<random>.tmp: who wrote a temporary file, so that a later run knows whether it is stale
_TEMP_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
_SWEPT: set[Path] = set()  # folders whose stale temporaries this process has removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; renamed into place (with the umask's permissions)
    when the block ends without error, removed otherwise, so that an interrupted run never leaves a truncated
    file. The folder is created if needed; the first call for a folder removes the stale temporaries of killed
    runs there."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent.resolve()
        if folder not in _SWEPT:
            _SWEPT.add(folder)
            remove_stale_temporaries(folder)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
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


def write_image_atomic(path: str | os.PathLike, array: np.ndarray, metadata: dict[str, str] | None = None) -> None:
    """Write an image atomically, its format from the suffix (PNG for others); 16-bit (H, W) arrays become
    16-bit PNG. A PNG keeps ``metadata`` in text chunks (what made it: :mod:`pdfnet.provenance`)."""
    path = Path(path)
    file_format = _PIL_FORMATS.get(path.suffix.lower(), "PNG")
    extra = {}
    if metadata and file_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        extra["pnginfo"] = info = PngInfo()
        for key, value in metadata.items():
            info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=file_format, **extra)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# How old a temporary must be before it is taken for stale when its writer cannot be checked: one written on
# another machine (a shared folder under multi-node torchrun), or one of an earlier version, without an owner.
OTHER_HOST_STALE_S = 24 * 3600.0
UNOWNED_STALE_S = 3600.0


def is_stale_temporary(path: Path, now: float | None = None) -> bool:
    """Whether ``path``, one of our temporary files, was left by a writer that is gone: a process of this machine
    that no longer runs (or whose process id now belongs to a process started after the file was last
    written), else one old enough (:data:`OTHER_HOST_STALE_S`, :data:`UNOWNED_STALE_S`)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    age = (now or time.time()) - mtime
    owner = _TEMP_OWNER.search(path.name)
    if owner is None:
        return age > UNOWNED_STALE_S
    if owner["host"] != _host_tag():
        return age > OTHER_HOST_STALE_S
    pid = int(owner["pid"])
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    started = _process_start_time(pid)
    return started is not None and started > mtime + 1.0  # the id was reused by a younger process


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files in ``folder`` whose writers are gone (:func:`is_stale_temporary`); returns
    how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        if is_stale_temporary(p, now):
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where the system says (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, the 22nd field, in clock ticks after boot
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


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
        self.created: list[Path] = []

    def __enter__(self) -> FolderLock:
        self.created = _missing_folders(self.folder)
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
                    self.remove_empty_folders()
                    raise OutputError(
                        f"{self.folder} is in use by another {self.what} run (process {owner}); wait for it to "
                        f"finish, or delete {self.path} if that process is not a {self.what} run"
                    ) from None
                self.path.unlink(missing_ok=True)  # a killed run's lock
                continue
            except OSError as e:
                self.remove_empty_folders()
                raise OutputError(f"cannot write in {self.folder}: {e.strerror or e}") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        self.remove_empty_folders()
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
        self.remove_empty_folders()

    def remove_empty_folders(self) -> None:
        """Remove the folders this lock created that are still empty (innermost first): a run that wrote
        nothing leaves nothing."""
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): keep it, and the folders above it
                break
        self.created = []


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


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
    """Check that files can be written in ``folder`` (created later, by the first write, if it does not exist
    yet), before any work is done.

    Raises:
        OutputError: naming the folder and the reason.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output {folder} exists and is not a folder")
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise OutputError(f"cannot write to {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {folder}: {existing} is not writable")
    return folder


def check_writable_file(path: str | os.PathLike) -> Path:
    """Check a file can be written at ``path`` (its folder created), before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; expected a file path")
    check_writable_folder(path.parent if str(path.parent) else Path("."))
    return path
