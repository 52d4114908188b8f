"""The networks behind ``pdfnet serve``, each loaded once, and one cutout: an uploaded file in; the cutout, the mask
and the pseudo-depth out, at the upload's size, as PNG files for the page or PNG bytes for the API.

No Gradio here: the ``serve`` command loads the networks given at start before importing Gradio, so that a bad
file costs no start-up time, and the page (``page.py``) turns the errors raised here into messages.
"""

from __future__ import annotations

import io
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
from ..inference.predictor import PRETRAINED, Predictor, to_rgba
from ..io import read_image

log = logging.getLogger("pdfnet.serve")

LOCAL = "local"  # the choice that stands for the --weights file, or for a --depth-model folder
WEIGHT_LABELS = {"base": "Base: the authors' DIS-5K model", "general": "General: PDFNet-General (more data)"}
MAX_PIXELS = 64_000_000  # larger uploads are refused with a message rather than risking the server's memory
KEEP_OUTPUTS_S = 3600  # the page's per-cutout output folders; Gradio serves its own copies of them (page.py)
PNG_LEVEL = 3  # zlib level: a 12 MP RGBA PNG takes 0.7 s at 3 and 1.2 s at PIL's default 6, a few % larger

# called as progress(fraction, desc=...), as a gr.Progress is
Progress = Callable[..., object]


def is_pretrained(weights: str) -> bool:
    """Whether ``--weights`` names published weights (``base``, ``general``) rather than a file, as ``predict``
    decides: a file of that name in the working folder wins."""
    return weights in PRETRAINED and not Path(weights).exists()


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
        self.check_choices(weights, depth)
        with self._lock:
            network = self._load_weights(weights).model
            # an RGB-only network (model.use_depth=false) reads no depth: no depth model is loaded for it
            estimator = self._load_depth(depth) if getattr(network, "use_depth", True) else None
        return Predictor(
            network, estimator, device=self.device, precision=self.precision, input_size=self.input_size, tta=tta
        )

    def check_choices(
        self, weights: str | None, depth: str | None, names: tuple[str, str] = ("weights", "depth model")
    ) -> None:
        """Raise InputError naming the choices there are when ``weights`` or ``depth`` (None: the default) is not
        one; ``names`` are what the message calls the two."""
        choices = [value for _, value in self.weight_choices]
        if weights is not None and weights not in choices:
            raise InputError(f"unknown {names[0]} {quoted(weights, 60)}; choose one of {', '.join(choices)}")
        if depth is not None and depth not in self.depth_sources:
            raise InputError(f"unknown {names[1]} {quoted(depth, 60)}; choose one of {', '.join(self.depth_sources)}")

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

    def loaded(self) -> dict[str, list[str]]:
        """The networks in memory: ``{"weights": [...], "depth_models": [...]}``, by their choice names."""
        with self._lock:
            return {"weights": list(self._predictors), "depth_models": list(self._depths)}


def printable(text: object, limit: int = 200) -> str:
    """``text`` fit for a log line: control and other unprintable characters escaped (an upload's name with a
    newline cannot forge a line), at most ``limit`` characters."""
    text = str(text)
    clipped = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in clipped)


def quoted(text: object, limit: int = 200) -> str:
    """``text`` as :func:`printable` makes it, in single quotes, for a message that names what a client sent
    (``repr`` would double the backslash of each escape)."""
    return f"'{printable(text, limit)}'"


def scrub(message: str) -> str:
    """A message for a client: absolute paths cut to their last part (the server's folders are its own)."""
    return re.sub(r"(?<![\w:/.~-])(?:~/|/)(?:[^\s/'\"]+/)+", "", message)


@dataclass(frozen=True)
class Options:
    """The choices of one cutout; None: the server's default."""

    tta: bool = False  # test-time augmentation: 6 passes
    refine: bool = True  # the foreground's colours at soft edges (RGBA only), as pdfnet predict
    depth: str | None = None  # a depth-model choice of the ModelCache
    weights: str | None = None  # a weights choice of the ModelCache


OUTPUTS = ("rgba", "mask", "depth")  # what one cutout can give
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def parse_flag(name: str, value: object) -> bool:
    """A boolean option: ``true``/``false``/``1``/``0`` (any case) or a JSON boolean.

    Raises:
        InputError: anything else, naming the option.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in FLAGS:
        return FLAGS[value.strip().lower()]
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be true or false (or 1 or 0), got {quoted(value, 40)}")


@dataclass
class Result:
    """The arrays of one cutout, those asked for (the others None), at the upload's size."""

    rgba: np.ndarray | None  # (H, W, 4) uint8: the colours (refined where asked), the mask as alpha
    mask: np.ndarray | None  # (H, W) uint8: the PNG ``pdfnet predict --format mask`` writes
    depth: np.ndarray  # (H, W) uint8: the pseudo-depth the network was given (near is bright)
    width: int
    height: int
    refined: bool


@dataclass(frozen=True)
class Cutout:
    """One finished cutout for the page: three PNGs at the upload's size, and what made them."""

    cutout: Path  # RGBA
    mask: Path  # L
    depth: Path  # L
    width: int
    height: int
    seconds: float  # from the start of the job to the PNGs written
    refined: bool  # foreground colours were refined


def read_upload(path: str | os.PathLike, name: str) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB (EXIF orientation applied, as :func:`pdfnet.io.read_image`).

    Raises:
        ImageReadError: not an image, broken, or over :data:`MAX_PIXELS`; naming the upload by ``name`` (the
            name it was sent with), never by the server's copy.
    """
    limit = f"over the pixel limit of {MAX_PIXELS // 10**6} MP; shrink it first"
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            width, height = image.size
    except Image.DecompressionBombError as e:  # so large that Pillow refuses even to open it: name the size
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels[1]) / 10**6:.0f} MP" if pixels else "too many pixels"
        raise ImageReadError(f"{name} is {size}, {limit}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageReadError(f"{name} is not an image (PNG, JPEG, WebP, TIFF, BMP, GIF)") from None
    if width * height > MAX_PIXELS:
        raise ImageReadError(f"{name} is {width}x{height} ({width * height / 10**6:.0f} MP), {limit}")
    try:
        return read_image(path)
    except ImageReadError as e:
        raise ImageReadError(str(e).replace(os.fspath(path), name)) from None


def encode_png(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 4) uint8 as PNG bytes (grey or RGBA)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def on_background(rgba: np.ndarray, colour: tuple[int, ...]) -> np.ndarray:
    """(H, W, 4) uint8 composited over a plain ``colour`` (RGB or RGBA, 0..255), as rembg's ``bgc``: RGBA."""
    background = Image.new("RGBA", (rgba.shape[1], rgba.shape[0]), tuple(colour))
    return np.asarray(Image.alpha_composite(background, Image.fromarray(rgba, "RGBA")))


def no_progress(*args, **kwargs) -> None:
    """A :data:`Progress` that shows nothing."""


def no_check() -> None:
    """A check between steps that never stops the work."""


class Cutter:
    """Cuts the main object out of uploaded files. Not thread-safe by design: the server's
    :class:`~pdfnet.app.worker.DeviceWorker` runs it on one thread, one image at a time.

    Args:
        models: the networks.
        workdir: where the page's PNGs go, in a fresh folder per cutout kept for :data:`KEEP_OUTPUTS_S`; Gradio
            serves files only from the system's temporary folder, the working folder or its own cache, so this is
            one of those.
    """

    def __init__(self, models: ModelCache, workdir: str | os.PathLike) -> None:
        self.models = models
        self.workdir = Path(workdir)

    def compute(
        self,
        path: str | os.PathLike,
        name: str,
        options: Options = Options(),  # noqa: B008 (frozen)
        outputs: tuple[str, ...] = OUTPUTS,
        check: Callable[[], None] = no_check,
        progress: Progress = no_progress,
    ) -> Result:
        """Cut out the image at ``path`` (sent as ``name``), computing only what ``outputs`` needs; ``check()``
        runs before each step and raises to stop the work there (the job was cancelled).

        Raises:
            ImageReadError: the upload is not a usable image.
            InputError: an unknown choice, or an image the depth model cannot take (too elongated).
            CheckpointError, DepthModelError: a model chosen for the first time cannot be loaded.
        """
        check()
        log.info("cutting out %s", printable(name))
        progress(0.05, desc="Reading the image")
        image = read_upload(path, name)
        height, width = image.shape[:2]
        check()
        progress(0.1, desc="Preparing the models")
        predictor = self.models.predictor(options.weights, options.depth, tta=options.tta)
        try:
            predictor.depth_estimator.input_shape(image)
        except InputError:  # its own message suggests a depth map, which the page cannot take
            raise InputError(f"a {width}x{height} image is too elongated for the depth model; crop it") from None
        check()
        progress(0.2, desc="Estimating depth")
        depth = depth_to_uint8(predictor.depth_estimator.estimate(image))
        mask = rgba = None
        if "mask" in outputs or "rgba" in outputs:
            check()
            progress(0.5, desc="Cutting out" + (" (6 passes: TTA)" if options.tta else ""))
            mask = predictor.predict_mask(image, depth)
        refined = False
        if "rgba" in outputs:
            check()
            refined = options.refine
            progress(0.8, desc="Refining the colours" if refined else "Composing the cutout")
            rgba = to_rgba(image, mask, refine=refined)
        return Result(rgba, mask, depth, width, height, refined)

    def png(
        self,
        path: str | os.PathLike,
        name: str,
        options: Options,
        output: str,
        background: tuple[int, ...] | None = None,
        check: Callable[[], None] = no_check,
    ) -> bytes:
        """One output (``rgba``, ``mask`` or ``depth``) as PNG bytes, the RGBA over ``background`` if given; as
        :meth:`compute` otherwise."""
        start = time.perf_counter()
        result = self.compute(path, name, options, (output,), check)
        array = getattr(result, output)
        if background is not None and output == "rgba":
            array = on_background(array, background)
        del result
        check()
        data = encode_png(array)
        log.info(
            "cut out %s (%dx%d, %s) in %.2f s",
            printable(name),
            array.shape[1],
            array.shape[0],
            output,
            time.perf_counter() - start,
        )
        return data

    def __call__(
        self,
        path: str | os.PathLike,
        name: str,
        options: Options = Options(),  # noqa: B008 (frozen)
        check: Callable[[], None] = no_check,
        progress: Progress = no_progress,
    ) -> Cutout:
        """The page's cutout: :meth:`compute`'s three outputs written as PNGs (see :meth:`_write`)."""
        start = time.perf_counter()
        result = self.compute(path, name, options, OUTPUTS, check, progress)
        check()
        progress(0.9, desc="Writing PNGs")
        cutout, mask, depth = self._write(name, result.rgba, result.depth)
        seconds = time.perf_counter() - start
        log.info("cut out %s (%dx%d) in %.2f s", printable(name), result.width, result.height, seconds)
        return Cutout(cutout, mask, depth, result.width, result.height, seconds, result.refined)

    def _write(self, name: str, rgba: np.ndarray, depth: np.ndarray) -> tuple[Path, Path, Path]:
        """``<stem>-cutout.png``, ``<stem>-mask.png``, ``<stem>-depth.png`` in a fresh folder (so that two uploads
        of the same name never share files), the download buttons' names."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        paths = folder / f"{safe_stem(name)}-cutout.png", folder / f"{safe_stem(name)}-mask.png"
        paths += (folder / f"{safe_stem(name)}-depth.png",)
        for path, array in zip(paths, (rgba, rgba[..., 3], depth)):
            Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=PNG_LEVEL)
        return paths

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_OUTPUTS_S
        for folder in self.workdir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


def safe_stem(name: str) -> str:
    """An upload's name reduced to a file stem of letters, digits, ``.``, ``_`` and ``-`` (``image`` if none)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:60] or "image"
