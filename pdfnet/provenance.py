"""What made an output: the options that change its content, kept inside the file and compared on a rerun.

``predict``, ``depth`` and ``test`` store a record in every file they write: PNGs in a text chunk, videos in
their container's metadata, both under the key ``pdfnet``, as JSON::

    {"by": "pdfnet predict", "options": {"output": "mask", "weights": "base", "tta": "off", ...}}

A rerun reads the record of each output that exists and compares its options with its own (:func:`sort_existing`):
the same options, and the output is skipped; other options, and it is redone with ``--overwrite`` and otherwise
kept and reported, one line per folder (:func:`report_lines`); no record (made by an earlier version or another
tool), and it is kept and reported likewise. Weight files and model folders are named by their content (a SHA-256
prefix, :func:`fingerprint`), so retrained weights saved under the old name count as other weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .io import VIDEO_SUFFIXES

RECORD_KEY = "pdfnet"
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest: each file read once per process


def make_record(command: str, options: Mapping[str, object]) -> dict[str, str]:
    """The record of an output made by ``pdfnet <command>`` with ``options`` (values as text: booleans as
    ``on``/``off``): the metadata to store in the file (a PNG's text chunks, a video's tags)."""
    record = {"by": f"pdfnet {command}", "options": {k: _text(v) for k, v in options.items()}}
    return {RECORD_KEY: json.dumps(record)}


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "" if value is None else str(value)


def read_options(path: str | os.PathLike) -> dict[str, str] | None:
    """The options recorded in an output file (PNG or video), or None when it holds no record (or cannot be
    read: it is then redone or reported like any other output without one)."""
    path = Path(path)
    try:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            text = _video_tag(path)
        else:
            from PIL import Image

            with Image.open(path) as image:  # a PNG's text chunks come before its pixels: only they are read
                text = getattr(image, "text", {}).get(RECORD_KEY)
        record = json.loads(text) if text else None
    except Exception:  # a damaged or foreign file: no usable record
        return None
    options = record.get("options") if isinstance(record, dict) else None
    return {str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else None


def _video_tag(path: Path) -> str | None:
    import av

    with av.open(os.fspath(path)) as container:
        # Matroska (WebM) stores tag names in capitals
        return next((v for k, v in container.metadata.items() if k.lower() == RECORD_KEY), None)


def fingerprint(path: str | os.PathLike) -> str:
    """A weight file or model folder named by its content: ``<name> sha256:<12 hex digits>`` (for a folder, of
    the files directly in it, hidden ones aside, with their names: the ``save_pretrained`` layout). Each file is
    read once per process."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            digest.update(file.name.encode() + b"\0" + _file_digest(file).encode())
    else:
        digest.update(_file_digest(path).encode())
    return f"{path.name} sha256:{digest.hexdigest()[:12]}"


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (os.fspath(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def depth_model_identity(name_or_path: str) -> str:
    """How outputs record the depth model that made them: a Hub repo by its id, a local folder or ONNX graph
    by its content."""
    from .hub import resolve_depth_model

    name = resolve_depth_model(name_or_path)
    usable = os.path.isfile(name) or os.path.isfile(os.path.join(name, "config.json"))
    return fingerprint(name) if usable else name


@dataclass
class Existing:
    """The outputs that exist already, sorted by what made them.

    Attributes:
        same: made with the options of this run.
        other: made with other options: a description of the difference -> the files.
        unrecorded: holding no record of their options.
    """

    same: list[Path] = field(default_factory=list)
    other: dict[str, list[Path]] = field(default_factory=dict)
    unrecorded: list[Path] = field(default_factory=list)

    def stale(self) -> list[Path]:
        """Every output not known to be made with this run's options."""
        return [p for paths in self.other.values() for p in paths] + self.unrecorded


def difference(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """How the options of an existing output differ from this run's, e.g. ``output=mask (now rgba), tta=on
    (now off)``."""
    keys = list(dict.fromkeys([*new, *old]))
    parts = [f"{k}={old.get(k, '?')} (now {new.get(k, '?')})" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(parts)


def sort_existing(outputs: Iterable[tuple[Path, Mapping[str, object]]]) -> Existing:
    """Sort the outputs that exist among ``(file, options this run would record in it)``."""
    existing = Existing()
    for path, options in outputs:
        if not path.exists():
            continue
        wanted = {k: _text(v) for k, v in options.items()}
        found = read_options(path)
        if found is None:
            existing.unrecorded.append(path)
        elif found == wanted:
            existing.same.append(path)
        else:
            existing.other.setdefault(difference(found, wanted), []).append(path)
    return existing


def report_lines(existing: Existing, noun: str = "output", action: str = "kept, --overwrite redoes them") -> list[str]:
    """One line per folder and kind of difference about the outputs not made with this run's options (without
    ``--overwrite``), ending in ``action``: what happens to them and how to redo them."""
    groups = [(("was", "were"), f"made with other options: {what}", paths) for what, paths in existing.other.items()]
    unrecorded = "no record of the options that made them (an earlier version or another tool)"
    groups.append((("holds", "hold"), unrecorded, existing.unrecorded))
    lines = []
    for verbs, what, paths in groups:
        by_folder: dict[Path, int] = {}
        for path in paths:
            by_folder[path.parent] = by_folder.get(path.parent, 0) + 1
        for folder, count in by_folder.items():
            one = count == 1
            lines.append(f"{folder}: {count} {noun}{'' if one else 's'} {verbs[0 if one else 1]} {what}; {action}")
    return lines
