"""Pseudo-depth: the depth PDFNet takes as its second input, from Depth-Anything-V2 (the paper's) or any other
depth estimator transformers loads with ``AutoModelForDepthEstimation``.

Depth-Anything models (V1, V2; ``config.model_type == "depth_anything"``) and ONNX graphs of them run with
Depth-Anything-V2's own ``infer_image`` pre- and post-processing, which the authors' depth notebook calls:

- the RGB image scaled to [0, 1] (float64), resized with OpenCV's bicubic interpolation to the "lower bound"
  size: the aspect ratio kept, the shorter side at least ``input_size`` (518 by default), both sides rounded to
  multiples of 14 (:func:`lower_bound_size`);
- ImageNet normalisation, then float32;
- the network's relative depth resized back to the image's size, bilinear with aligned corners;
- min-max normalised per image; the stored map is ``round(255 d)`` (the notebook's ``cv2.imwrite``).

transformers' own image processor (antialiased resampling, other sizes) is not used for them: it gives the
network a different input.

Other families (DPT and MiDaS, ZoeDepth, Depth Pro, GLPN, Prompt Depth Anything, ...) run with their own image
processor (``AutoImageProcessor``) and its ``post_process_depth_estimation`` back to the image's size, as
transformers' depth-estimation pipeline calls it (where a processor has none: bicubic resizing, what DPT's and
GLPN's do). Their outputs differ in sign: a relative inverse depth ("disparity": Depth-Anything, DPT/MiDaS) is
large where the scene is near, a metric depth (ZoeDepth, Depth Pro, GLPN, Depth-Anything's metric fine-tunes)
small. PDFNet learnt on Depth-Anything-V2's disparity, near bright, so a metric depth ``d`` becomes ``1 / d``
before the min-max: Depth-Anything's relative output is ``a / d + b`` for the scene's true depth ``d`` and some
``a > 0`` and ``b``, and the min-max of ``a / d + b`` is that of ``1 / d``; ``-d`` would keep the sign but not
the shape (far backgrounds would take most of the 8-bit range). Depths under a thousandth of the image's largest
are raised to it first, so that zeros and negative outputs stay finite. :data:`DEPTH_KINDS` says which family is
which; ``kind`` (``--depth-kind``) overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DepthModelError, InputError, first_line
from ..hub import (  # noqa: F401 (the names of the published depth models, also used from here)
    DEFAULT_DEPTH_MODEL,
    DEPTH_LICENSES,
    DEPTH_MODELS,
    LICENSE_NOTE,
    check_depth_model_source,
    resolve_depth_model,
)
from ..model.fastpath import attention
from ..runtime import IMAGENET_MEAN, IMAGENET_STD, PRECISIONS, check_precision

if TYPE_CHECKING:
    from ..distributed import Runtime

# The depth model's input is at most this many times input_size^2 pixels: far thinner images (a 3x500 sliver
# gives a 518x86333 input) would need tens of gigabytes of attention.
MAX_INPUT_AREA = 8
PATCH = 14
DEFAULT_INPUT_SIZE = 518  # Depth-Anything-V2's infer_image default

# what a family's (post-processed) output is, by config.model_type: "disparity", a relative inverse depth (near is
# large), or "metric", a distance (near is small); Depth-Anything's metric fine-tunes say so in their config
DEPTH_KINDS = {
    "depth_anything": "disparity",
    "dpt": "disparity",  # DPT and MiDaS v3.x: relative inverse depth
    "zoedepth": "metric",
    "depth_pro": "metric",  # its post-processing turns the canonical inverse depth into metres
    "glpn": "metric",
    "prompt_depth_anything": "metric",
}
KINDS = ("disparity", "metric")
METRIC_FLOOR = 1e-3  # metric depths under this fraction of the image's largest are raised to it before 1 / d


def lower_bound_size(height: int, width: int, input_size: int = 518, multiple: int = PATCH) -> tuple[int, int]:
    """(h, w) of Depth-Anything-V2's input for an image of ``height`` x ``width``: scaled by one factor so that
    both sides are at least ``input_size``, each then rounded to a multiple of ``multiple`` (half to even, as
    NumPy rounds), or rounded up where rounding would fall below ``input_size``. Examples: 480x640 -> 518x686,
    1200x1600 at 1024 -> 1036x1372."""
    scale = max(input_size / height, input_size / width)

    def constrain(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        return int(np.ceil(x / multiple) * multiple) if y < input_size else y

    return constrain(scale * height), constrain(scale * width)


def minmax(depth: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (float32); a constant map becomes zeros."""
    depth = depth.astype(np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)


def near_is_bright(depth: np.ndarray, kind: str) -> np.ndarray:
    """A depth model's (H, W) output -> PDFNet's depth map, (H, W) float32 in [0, 1], near bright: a disparity
    min-max normalised as it is, a metric depth ``d`` as ``1 / max(d, METRIC_FLOOR * max d)`` (see the module's
    docstring for why)."""
    if kind == "metric":
        depth = depth.astype(np.float64)
        top = float(depth.max())
        if not top > 0:  # no positive depth at all: nothing to tell near from far
            return np.zeros(depth.shape, np.float32)
        depth = 1.0 / np.maximum(depth, METRIC_FLOOR * top)
    elif kind != "disparity":
        raise ValueError(f"unknown depth kind {kind!r}; expected one of {', '.join(KINDS)}")
    return minmax(depth)


def depth_kind(config) -> str | None:
    """``disparity`` or ``metric`` for a transformers depth model's config (:data:`DEPTH_KINDS`); None for a
    family not in the table."""
    model_type = getattr(config, "model_type", None)
    if model_type == "depth_anything" and getattr(config, "depth_estimation_type", "relative") == "metric":
        return "metric"
    return DEPTH_KINDS.get(model_type)


class DepthEstimator:
    """A depth model as a function of RGB images: Depth-Anything (V1, V2) with ``infer_image``'s pre- and
    post-processing, any other transformers depth estimator with its own image processor (see the module's
    docstring), the map made near-is-bright.

    Args:
        name_or_path: ``small``/``base``/``large`` (Depth-Anything-V2), a Hugging Face repo id, a local folder
            written by ``save_pretrained`` (a Depth-Anything model's image-processor config, if any, is not
            used), or a Depth-Anything ``.onnx`` graph.
        device: where the model runs.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        input_size: Depth-Anything's shorter input side (None: 518, Depth-Anything-V2's default; 1024 for the
            ``depth_large_1024`` loss targets). Other families take their image processor's size: giving one is
            an error.
        kind: ``disparity`` or ``metric``, what the model's output is (None: from :data:`DEPTH_KINDS`).

    Raises:
        DepthModelError: the model or its image processor cannot be loaded (offline without a local copy, or not
            a depth model), its kind is unknown, or ``input_size`` is given for a family that takes none; saying
            what to pass instead.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_DEPTH_MODEL,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: int | None = None,
        kind: str | None = None,
    ) -> None:
        if input_size is not None and input_size < PATCH:
            raise ValueError(f"input_size must be at least {PATCH}, got {input_size}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.name = resolve_depth_model(name_or_path)
        self.device = torch.device(device)
        self.dtype = PRECISIONS[check_precision(precision)]
        self.model = load_depth_model(self.name, self.dtype).to(device=self.device, dtype=self.dtype).eval()
        config = getattr(self.model, "config", None)  # None: an ONNX graph, exported from Depth-Anything
        self.model_type = "depth_anything" if config is None else config.model_type
        self.kind = kind or ("disparity" if config is None else depth_kind(config))
        if self.kind is None:
            raise DepthModelError(
                f"{self.name} is a {self.model_type} model, and whether it predicts disparity (near is large) or "
                "metric depth (near is small) is not known here: say which with --depth-kind disparity|metric "
                "(Python: kind=)"
            )
        self.processor = None
        if self.model_type == "depth_anything":
            self.input_size = input_size or DEFAULT_INPUT_SIZE
        elif input_size is not None:
            raise DepthModelError(
                f"{self.name} is a {self.model_type} model: its image processor sets its input size; leave "
                "--input-size out (it is Depth-Anything's)"
            )
        else:
            self.input_size = None
            self.processor = load_image_processor(self.name)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            use_blocked_attention(self.model)

    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32: ``infer_image``'s resize and normalisation for
        Depth-Anything, the model's image processor for other families.

        Raises:
            InputError: not an RGB image, too elongated for Depth-Anything (see :data:`MAX_INPUT_AREA`), or
                refused by the image processor.
        """
        if self.processor is not None:
            self._check_rgb(image_rgb)
            return self._process(image_rgb)
        h, w = self.input_shape(image_rgb)
        x = cv2.resize(image_rgb / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)  # float64, as infer_image
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32))[None]

    def _process(self, image_rgb: np.ndarray) -> torch.Tensor:
        try:
            return self.processor(images=image_rgb, return_tensors="pt")["pixel_values"].float()
        except (ValueError, TypeError, RuntimeError, IndexError) as e:
            H, W = image_rgb.shape[:2]
            first = first_line(e)
            raise InputError(f"the image processor of {self.name} cannot take a {W}x{H} image: {first}") from None

    @staticmethod
    def _check_rgb(image_rgb: np.ndarray) -> None:
        if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3:
            raise InputError(f"image must be (H, W, 3) uint8 RGB, got {getattr(image_rgb, 'shape', image_rgb)}")

    def input_shape(self, image_rgb: np.ndarray) -> tuple[int, int]:
        """(h, w) of the model's input for this image.

        Raises:
            InputError: not an RGB image, too elongated for Depth-Anything (see :data:`MAX_INPUT_AREA`), or
                refused by the image processor.
        """
        self._check_rgb(image_rgb)
        if self.processor is not None:
            return tuple(self._process(image_rgb).shape[-2:])
        H, W = image_rgb.shape[:2]
        h, w = lower_bound_size(H, W, self.input_size)
        if h * w > MAX_INPUT_AREA * self.input_size**2:
            raise InputError(
                f"a {W}x{H} image is too elongated for the depth model (its input would be {w}x{h}); crop it, or "
                "give a ready-made depth map"
            )
        return h, w

    @torch.inference_mode()
    def estimate_batch(self, images_rgb: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Depth of several RGB images; images whose model inputs have the same size run as one batch.

        Returns one (H, W) float32 map in [0, 1] per image, at that image's size (near is bright).
        """
        pixels = [self.preprocess(image) for image in images_rgb]
        results: list[np.ndarray | None] = [None] * len(images_rgb)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        for indices in groups.values():
            batch = torch.cat([pixels[i] for i in indices]).to(self.device, self.dtype)
            sizes = [tuple(images_rgb[i].shape[:2]) for i in indices]
            for i, depth in zip(indices, self._postprocess(self.model(pixel_values=batch), sizes)):
                results[i] = near_is_bright(depth.cpu().numpy(), self.kind)
        return results  # type: ignore[return-value]

    def _postprocess(self, outputs, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The model's outputs -> one (H, W) float32 depth per image at its size."""
        if self.processor is None:  # infer_image: bilinear with aligned corners
            predicted = outputs.predicted_depth.float()  # (N, h, w)
            return [
                F.interpolate(p[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
                for p, size in zip(predicted, sizes)
            ]
        fields = dict(outputs.items()) if hasattr(outputs, "items") else vars(outputs)
        outputs = SimpleNamespace(
            **{k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in fields.items()}
        )
        post = getattr(self.processor, "post_process_depth_estimation", None)
        if post is None:  # an older transformers or a processor without one: what DPT's and GLPN's do
            return [
                F.interpolate(p[None, None], size=size, mode="bicubic", align_corners=False)[0, 0]
                for p, size in zip(outputs.predicted_depth, sizes)
            ]
        # the sizes go second, as transformers' depth-estimation pipeline passes them: ZoeDepth's source sizes
        # (it then strips its padding and resizes to them), the other processors' target sizes
        return [r["predicted_depth"].float() for r in post(outputs, sizes)]

    def estimate(self, image_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 depth in [0, 1], near bright."""
        return self.estimate_batch([image_rgb])[0]


BLOCKED_ATTENTION = "pdfnet_blocked"


# keyword arguments of transformers' attention call that do not change what is computed
_INERT_KWARGS = {"output_attentions", "output_hidden_states", "return_dict", "use_cache"}


def _blocked_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    """transformers' attention interface over :func:`pdfnet.model.fastpath.attention` (the CPU's bf16 mode:
    0.63 s against 1.0 s for the 24 attentions of Depth-Anything-V2-Large at 518 pixels, 2 cores, Zen 5). Its
    (B, heads, N, d) query, key and value give (B, N, heads, d). Masked, causal, grouped-head, rescaled or
    otherwise modified attention goes to transformers' own function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)  # as transformers reads it
    plain = (
        attention_mask is None
        and not causal
        and all(name in _INERT_KWARGS or arg is None for name, arg in kw.items())
        and (scaling is None or abs(scaling - query.shape[-1] ** -0.5) < 1e-12)
        and not (module.training and dropout)
        and key.shape[1] == query.shape[1]
    )
    if plain:
        return attention(query, key, value).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
    )


def use_blocked_attention(model) -> bool:
    """Run the attention of a transformers depth model's backbone through :func:`_blocked_attention`. False,
    changing nothing, where the model has no backbone that can switch its attention (an ONNX graph, an
    architecture without the attention interface) or this transformers cannot switch it (older versions)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "set_attn_implementation"):
        return False
    can_set = getattr(backbone, "_can_set_attn_implementation", None)
    if can_set is not None and not can_set():
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(BLOCKED_ATTENTION, _blocked_attention)
    try:
        backbone.set_attn_implementation(BLOCKED_ATTENTION)
    except (ValueError, TypeError, KeyError):  # an architecture that refuses custom attention: leave it
        return False
    return getattr(backbone.config, "_attn_implementation", None) == BLOCKED_ATTENTION


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def load_depth_model(name: str, dtype: torch.dtype = torch.float32):
    """A transformers depth-estimation model from a repo id or a local folder, or an ONNX graph of one
    (``.onnx``, run by ONNX Runtime), in eval mode.

    The weights are read straight into ``dtype`` (an ONNX graph keeps its own): converting a float32 copy
    afterwards held both at once, about 1.9 GiB for Depth-Anything-V2-Large in bf16.

    Raises:
        DepthModelError: naming the model and what to pass instead.
    """
    if name.endswith(".onnx"):
        from ..model.onnx import OnnxDepthModel

        return OnnxDepthModel(name)
    from transformers import AutoModelForDepthEstimation

    local = os.path.isdir(name)
    cache_only = check_depth_model_source(name)
    # transformers 4.56 renamed torch_dtype to dtype (the old name still works, with a warning)
    dtype_arg = "dtype" if _transformers_version() >= (4, 56) else "torch_dtype"
    try:
        return AutoModelForDepthEstimation.from_pretrained(
            name, local_files_only=cache_only, **{dtype_arg: dtype}
        ).eval()
    except (OSError, ValueError, KeyError) as e:
        if local:
            reason = f"{name} is not a transformers depth-model folder (save_pretrained layout)"
        else:
            reason = f"cannot fetch {name} from the Hugging Face Hub (offline, or not in the Hugging Face cache?)"
        first = first_line(e)
        raise DepthModelError(
            f"{reason}: {first}. Pass a local depth-model folder as --depth-model (Python: depth_model=), "
            "or ready-made depth maps with --depth"
        ) from None


def load_image_processor(name: str):
    """The image processor saved with a transformers depth model (repo id or folder).

    Raises:
        DepthModelError: there is none, or it cannot be fetched (offline and not in the cache), naming the model.
    """
    from transformers import AutoImageProcessor

    cache_only = check_depth_model_source(name)  # as load_depth_model: offline, the cache alone, or one-line error
    try:
        return AutoImageProcessor.from_pretrained(name, local_files_only=cache_only)
    except (OSError, ValueError, KeyError) as e:
        first = first_line(e)
        raise DepthModelError(
            f"no image processor for {name} (preprocessor_config.json, written by the processor's "
            f"save_pretrained): {first}"
        ) from None


def encode_depth(depth: np.ndarray, fmt: str = "png8") -> np.ndarray:
    """[0, 1] float depth -> the stored map: uint8 round(255 d) (the authors' notebook) or uint16."""
    if fmt == "png8":
        from .processing import depth_to_uint8

        return depth_to_uint8(depth)
    if fmt == "png16":
        return np.rint(depth * 65535.0).astype(np.uint16)
    raise ValueError(f"unknown depth format {fmt!r}; expected png8 or png16")


def prepare_depth_maps(
    data_root: str | os.PathLike,
    splits: Sequence[str],
    make_estimator: Callable[[], DepthEstimator],
    out_name: str = "depth_large",
    batch_size: int = 1,
    overwrite: bool = False,
    fmt: str = "png8",
    progress: bool = True,
    rt: Runtime | None = None,
    options: Mapping[str, object] | None = None,
    kept_action: str = "kept, --overwrite redoes them",
) -> tuple[int, list[str]]:
    """Write one depth map per image of each split to ``<depth base>/<out_name>/<stem>.png``, the depth base
    being the split's own folder (``<root>/<split>/``, ``DUTS-TE/``, ``HRSOD_train_depth/``, ...: see
    :mod:`pdfnet.data.layout`).

    Maps keep the image's size and are min-max normalised per image. Existing maps made with the same
    ``options`` are skipped, those made otherwise kept and reported (one line per folder), unless ``overwrite``
    redoes them all (the depth model is not even loaded when nothing is left to do); every write is atomic; a
    folder being written by another run is refused with a message naming it. An unreadable or unusable image is
    reported and the rest still processed.

    Args:
        splits: split names (``DIS-TR``, ``HRSOD-TR``, ``PATH:NAME``, ...).
        make_estimator: builds the estimator, called once, only if some map is missing (in this process's share).
        rt: under ``torchrun``, this process's place (:func:`pdfnet.distributed.setup_runtime`): every process
            writes its own share of the missing maps; rank 0 finds them and holds the folders' locks.
        options: what makes the maps (model, input size, format, precision: :mod:`pdfnet.provenance`),
            recorded in each and compared with the existing ones; None skips every existing map.
        kept_action: how the note on maps made otherwise ends (what happens to them, how to redo them).

    Returns:
        (number of maps written, error messages naming the files at fault), over all processes.
    """
    from contextlib import ExitStack

    from tqdm import tqdm

    from ..distributed import Runtime, all_ranks, held_by_main, log, on_main, shard
    from ..errors import PDFNetError
    from ..io import FolderLock, read_image, write_image_atomic
    from ..provenance import make_record, report_lines, sort_existing
    from .layout import find_split

    rt = rt or Runtime(torch.device("cpu"))
    record = make_record("depth", options) if options is not None else None

    def plan() -> tuple[dict[str, Path], list[tuple[str, Path]], list[str], list[str]]:
        out_dirs, todo, errors, kept = {}, [], [], []
        for spec in splits:
            try:
                split = find_split(data_root, spec)
                images = split.image_files()
            except PDFNetError as e:
                errors.append(str(e))
                continue
            out_dirs[spec] = out_dir = split.depth_dir(out_name)
            maps = {p: out_dir / f"{p.stem}.png" for p in images}
            if overwrite:
                todo += [(spec, p) for p in images]
                continue
            if options is None:
                todo += [(spec, p) for p, target in maps.items() if not target.exists()]
                continue
            existing = sort_existing((target, options) for target in maps.values())
            done = set(existing.same) | set(existing.stale())
            todo += [(spec, p) for p, target in maps.items() if target not in done]
            kept += report_lines(existing, noun="depth map", action=kept_action)
        return out_dirs, todo, errors, kept

    out_dirs, todo, errors, kept = on_main(plan, rt)  # one view of what exists, for every process
    for line in kept:
        log(rt, f"note: {line}")
    if not todo:
        return 0, errors

    def work() -> tuple[int, list[str]]:
        mine, written, failed = shard(todo, rt), 0, []
        if not mine:
            return written, failed
        estimator = make_estimator()
        for spec in dict.fromkeys(spec for spec, _ in mine):
            out_dir, paths = out_dirs[spec], [p for s, p in mine if s == spec]
            bar = tqdm(
                total=len(paths), desc=f"{spec} -> {out_name}", unit="img", disable=not (progress and rt.is_main)
            )
            for start in range(0, len(paths), batch_size):
                batch, arrays = [], []
                for path in paths[start : start + batch_size]:
                    if not overwrite and (out_dir / f"{path.stem}.png").exists():  # written meanwhile
                        bar.update(1)
                        continue
                    try:
                        image = read_image(path)
                        estimator.input_shape(image)  # refuse unusable shapes before the batch runs
                    except PDFNetError as e:
                        failed.append(str(e) if str(path) in str(e) else f"{path}: {e}")
                        bar.update(1)
                        continue
                    arrays.append(image)
                    batch.append(path)
                if not batch:
                    continue
                for path, depth in zip(batch, estimator.estimate_batch(arrays)):
                    write_image_atomic(out_dir / f"{path.stem}.png", encode_depth(depth, fmt), record)
                    written += 1
                    bar.update(1)
            bar.close()
        return written, failed

    with ExitStack() as stack:
        for spec in dict.fromkeys(spec for spec, _ in todo):
            stack.enter_context(held_by_main(FolderLock(out_dirs[spec], "depth_prep"), rt))
        outcomes = all_ranks(work, rt)
    return sum(n for n, _ in outcomes), errors + [message for _, messages in outcomes for message in messages]
