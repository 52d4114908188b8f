"""The networks behind ``pdfnet serve``, each loaded once, and one cutout: an uploaded file in; the cutout, the mask
and the pseudo-depth out, as PNGs at the upload's size.

No Gradio here: the ``serve`` command loads the networks given at start before importing Gradio, so that a bad
file costs no start-up time, and the page (``page.py``) turns the errors raised here into messages.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.depth import DEPTH_MODELS, DepthEstimator
from ..data.processing import depth_to_uint8
from ..errors import ImageReadError, InputError
from ..inference.predictor import PRETRAINED, Predictor
from ..io import read_image

log = logging.getLogger("pdfnet.serve")

LOCAL = "local"  # the choice that stands for the --weights file, or for a --depth-model folder
WEIGHT_LABELS = {"base": "Base: the authors' DIS-5K model", "general": "General: PDFNet-General (more data)"}
MAX_PIXELS = 64_000_000  # larger uploads are refused with a message rather than risking the server's memory
KEEP_OUTPUTS_S = 3600  # our per-request output folders; Gradio serves its own copies of them (page.py)
PNG_LEVEL = 3  # zlib level: a 12 MP RGBA PNG takes 0.7 s at 3 and 1.2 s at PIL's default 6, a few % larger

# called as progress(fraction, desc=...), as a gr.Progress is
Progress = Callable[..., object]


def is_pretrained(weights: str) -> bool:
    """Whether ``--weights`` names published weights (``base``, ``general``) rather than a file, as ``predict``
    decides: a file of that name in the working folder wins."""
    return weights in PRETRAINED and not Path(weights).exists()


def takes_refine(cutout: Callable = Predictor.cutout) -> bool:
    """Whether a ``cutout`` method (by default this version's :meth:`Predictor.cutout`) takes ``refine``, the
    foreground-colour refinement that comes with :func:`pdfnet.refine_foreground`."""
    return "refine" in inspect.signature(cutout).parameters


class ModelCache:
    """The networks of one server: PDFNet weights and Depth-Anything-V2 models, each loaded on first use and kept
    for the server's life; :meth:`preload` loads the ones given at start, so that a bad file is reported before
    the server starts.

    Args:
        weights: ``base``, ``general`` or a checkpoint file: the default choice (a file is offered as ``local``).
        depth_model: ``small``/``base``/``large``, a Hugging Face repo id or a folder: the default depth choice
            (a folder is offered as ``local``, a repo id under its own name).
        device, precision, input_size: as :class:`pdfnet.Predictor`'s.
    """

    def __init__(
        self, weights: str, depth_model: str, device: str, precision: str = "fp32", input_size: int = 1024
    ) -> None:
        self.device, self.precision, self.input_size = device, precision, input_size
        self.weights_file = None if is_pretrained(weights) else weights
        self.default_weights = LOCAL if self.weights_file else weights
        # depth choice -> what DepthEstimator loads
        self.depth_sources = {name: name for name in DEPTH_MODELS}
        if depth_model.lower() in DEPTH_MODELS:
            self.default_depth = depth_model.lower()
        else:
            self.default_depth = LOCAL if os.path.isdir(depth_model) else depth_model
            self.depth_sources[self.default_depth] = depth_model
        self._predictors: dict[str, Predictor] = {}
        self._depths: dict[str, DepthEstimator] = {}
        self._lock = threading.Lock()  # two requests for a model not loaded yet load it once

    @property
    def weight_choices(self) -> list[tuple[str, str]]:
        """(label, value) of each weights choice, the default first."""
        local = [(f"Local: {Path(self.weights_file).name}", LOCAL)] if self.weights_file else []
        return local + [(label, name) for name, label in WEIGHT_LABELS.items()]

    @property
    def depth_choices(self) -> list[tuple[str, str]]:
        """(label, value) of each depth-model choice: small, base, large and the one given at start."""
        custom = self.depth_sources[self.default_depth]
        label = {LOCAL: f"local: {Path(custom).name}"}.get(self.default_depth, self.default_depth)
        return [(label if value == self.default_depth else value, value) for value in self.depth_sources]

    def short_names(self, weights: str, depth: str) -> tuple[str, str]:
        """What the status line calls these choices: the file or folder name for ``local``, else the choice."""
        weights_name = Path(self.weights_file).name if weights == LOCAL and self.weights_file else weights
        depth_name = Path(self.depth_sources[depth]).name if depth == LOCAL else depth
        return weights_name, depth_name

    def preload(self) -> None:
        """Load the default weights and depth model now.

        Raises:
            CheckpointError, DepthModelError: naming the file or model that cannot be loaded.
        """
        self.predictor(self.default_weights, self.default_depth)

    def predictor(self, weights: str | None = None, depth: str | None = None, tta: bool = False) -> Predictor:
        """A :class:`Predictor` for these choices (None: the default), sharing the loaded networks.

        Raises:
            InputError: an unknown choice, naming the ones there are.
        """
        weights, depth = weights or self.default_weights, depth or self.default_depth
        names = [value for _, value in self.weight_choices]
        if weights not in names:
            raise InputError(f"unknown weights {weights!r}; choose one of {', '.join(names)}")
        if depth not in self.depth_sources:
            raise InputError(f"unknown depth model {depth!r}; choose one of {', '.join(self.depth_sources)}")
        with self._lock:
            network = self._load_weights(weights).model
            # an RGB-only network (model.use_depth=false) reads no depth: no depth model is loaded for it
            estimator = self._load_depth(depth) if getattr(network, "use_depth", True) else None
        return Predictor(
            network, estimator, device=self.device, precision=self.precision, input_size=self.input_size, tta=tta
        )

    def _load_weights(self, weights: str) -> Predictor:
        if weights not in self._predictors:
            start = time.perf_counter()
            options = dict(device=self.device, depth_model=None, precision=self.precision, input_size=self.input_size)
            if weights == LOCAL:
                predictor = Predictor.from_checkpoint(self.weights_file, **options)
            else:
                predictor = Predictor.from_pretrained(weights, **options)
            self._predictors[weights] = predictor
            source = self.weights_file if weights == LOCAL else weights
            log.info("loaded weights %s in %.1f s", source, time.perf_counter() - start)
        return self._predictors[weights]

    def _load_depth(self, depth: str) -> DepthEstimator:
        if depth not in self._depths:
            start = time.perf_counter()
            source = self.depth_sources[depth]
            self._depths[depth] = DepthEstimator(source, device=self.device, precision=self.precision)
            log.info("loaded depth model %s in %.1f s", source, time.perf_counter() - start)
        return self._depths[depth]


@dataclass(frozen=True)
class Cutout:
    """One finished cutout: three PNGs at the upload's size, and what made them."""

    cutout: Path  # RGBA: the upload's colours (refined where asked and available), the mask as alpha
    mask: Path  # L: the 8-bit mask, the PNG ``pdfnet predict --format mask`` writes
    depth: Path  # L: the pseudo-depth the network was given (near is bright)
    width: int
    height: int
    seconds: float  # from the upload's arrival to the PNGs written
    refined: bool  # foreground colours were refined
    note: str = ""  # something the user should know, e.g. that refinement is not available


def read_upload(path: str | os.PathLike, name: str) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB (EXIF orientation applied, as :func:`pdfnet.io.read_image`).

    Raises:
        ImageReadError: not an image, broken, or over :data:`MAX_PIXELS`; naming the upload by ``name`` (the
            name it was sent with), never by the server's copy.
    """
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise ImageReadError(f"{name} is not an image (PNG, JPEG, WebP, TIFF, BMP, GIF)") from None
    if width * height > MAX_PIXELS:
        raise ImageReadError(f"{name} is {width}x{height}, over the {MAX_PIXELS // 10**6} MP limit; shrink it first")
    try:
        return read_image(path)
    except ImageReadError as e:
        raise ImageReadError(str(e).replace(os.fspath(path), name)) from None


def cutout_rgba(predictor: Predictor, image: np.ndarray, depth: np.ndarray, refine: bool) -> tuple[np.ndarray, str]:
    """``predictor.cutout(image, depth, refine=refine)`` where ``cutout`` takes ``refine``; elsewhere the plain
    cutout and, if refinement was asked for, a note that it is not available. Returns (RGBA, note)."""
    if takes_refine(predictor.cutout):
        return predictor.cutout(image, depth, refine=refine), ""
    note = "foreground-colour refinement is not available in this version of pdfnet" if refine else ""
    return predictor.cutout(image, depth), note


def no_progress(*args, **kwargs) -> None:
    """A :data:`Progress` that shows nothing."""


class Cutter:
    """Cuts the main object out of uploaded files, one at a time, into fresh folders under ``workdir`` (each
    kept for :data:`KEEP_OUTPUTS_S`).

    Args:
        models: the networks.
        workdir: where the PNGs go; Gradio serves files only from the system's temporary folder, the working
            folder or its own cache, so this is one of those.
    """

    def __init__(self, models: ModelCache, workdir: str | os.PathLike) -> None:
        self.models = models
        self.workdir = Path(workdir)
        self.refine_supported = takes_refine()
        self._lock = threading.Lock()  # the page's queue already runs one request per device; this covers callers

    def __call__(
        self,
        path: str | os.PathLike,
        name: str,
        tta: bool = False,
        refine: bool = True,
        depth: str | None = None,
        weights: str | None = None,
        progress: Progress = no_progress,
    ) -> Cutout:
        """Cut out the image at ``path`` (sent as ``name``) with these choices (None: the server's default).

        Raises:
            ImageReadError: the upload is not a usable image.
            InputError: an unknown choice, or an image the depth model cannot take (too elongated).
            CheckpointError, DepthModelError: a model chosen for the first time cannot be loaded.
        """
        start = time.perf_counter()
        log.info("cutting out %s", name)
        progress(0.05, desc="Reading the image")
        image = read_upload(path, name)
        with self._lock:
            progress(0.1, desc="Preparing the models")
            predictor = self.models.predictor(weights, depth, tta=bool(tta))
            progress(0.2, desc="Estimating depth")
            depth_map = depth_to_uint8(predictor.depth_estimator.estimate(image))
            progress(0.5, desc="Cutting out" + (" (6 passes: TTA)" if tta else ""))
            rgba, note = cutout_rgba(predictor, image, depth_map, bool(refine))
        progress(0.9, desc="Writing PNGs")
        cutout, mask, depth_png = self._write(name, rgba, depth_map)
        height, width = image.shape[:2]
        seconds = time.perf_counter() - start
        log.info("cut out %s (%dx%d) in %.2f s", name, width, height, seconds)
        return Cutout(cutout, mask, depth_png, width, height, seconds, bool(refine) and not note, note)

    def _write(self, name: str, rgba: np.ndarray, depth: np.ndarray) -> tuple[Path, Path, Path]:
        """``<stem>-cutout.png``, ``<stem>-mask.png``, ``<stem>-depth.png`` in a fresh folder (so that two uploads
        of the same name never share files), the download buttons' names."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:60] or "image"
        paths = folder / f"{stem}-cutout.png", folder / f"{stem}-mask.png", folder / f"{stem}-depth.png"
        for path, array in zip(paths, (rgba, rgba[..., 3], depth)):
            Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=PNG_LEVEL)
        return paths

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_OUTPUTS_S
        for folder in self.workdir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
