"""Cutting objects out of photos: the PDFNet network with its depth model, and the pre- and post-processing of
``test.py`` (:mod:`pdfnet.data.processing`), so that a user's mask is the PNG ``test.py`` would write and score."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.depth import DepthEstimator
from ..data.processing import (
    check_depth,
    check_image,
    depth_to_uint8,
    gray_to_tensor,
    image_to_tensor,
    probability_to_mask,
    resize_levels,
)
from ..errors import InputError
from ..hub import DEFAULT_DEPTH_MODEL, PRETRAINED, check_depth_model_source, download_weights  # noqa: F401
from ..memory import release_freed_memory
from ..model.checkpoint import load_pdfnet, weights_read_depth
from ..model.layers import resize
from ..model.network import PDFNet
from ..model.onnx import OnnxNetwork
from ..runtime import AUTO_MAX_INPUT_SIZE, autocast, effective_precision, resolve_device
from .foreground import refine_foreground
from .uncertainty import Uncertainty, pass_spread, score, spread_to_levels

TTA_SCALES = (0.75, 1.0, 1.25)


def parse_input_size(value: int | str | None, step: int = 256) -> tuple[int | None, int]:
    """``input_size`` as :class:`Predictor` takes it -> (the fixed side, or None for ``auto``; the largest side).

    ``1024`` is a fixed side; ``"auto"`` (capped at :data:`AUTO_MAX_INPUT_SIZE`) or ``"auto:N"`` (capped at N)
    chooses each image's side from its longer side (:meth:`Predictor.side_for`).

    Raises:
        InputError: not a positive multiple of ``step``, nor ``auto`` or ``auto:N`` with N one.
    """
    text = str(value)
    if text == "auto" or text.startswith("auto:"):
        cap = text.partition(":")[2] or str(AUTO_MAX_INPUT_SIZE)
        if cap.isdigit() and int(cap) >= step and int(cap) % step == 0:
            return None, int(cap)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= step and value % step == 0:
        return value, value
    raise InputError(
        f"input_size must be a positive multiple of {step}, 'auto' or 'auto:N' (N a multiple of {step}), got {value!r}"
    )


@dataclass
class Prediction:
    """What :meth:`Predictor.predict_all` gives for one image.

    Attributes:
        mask: (h, w) uint8, the PNG ``test.py`` writes (at the image's size unless another was asked for).
        depth: (H, W) uint8, the depth map the network read (computed, or the one given), at the image's size;
            None for an RGB-only network.
        uncertainty: with ``uncertainty=True``, how much the six test-time passes disagree, at the mask's size
            (:mod:`pdfnet.inference.uncertainty`); else None.
    """

    mask: np.ndarray
    depth: np.ndarray | None
    uncertainty: Uncertainty | None = None


class Predictor:
    """PDFNet inference on RGB images of any size.

    Each image is resized to ``input_size`` squared as the original loader resizes it (8-bit bilinear with
    aligned corners), run with its pseudo-depth (computed, or given; quantised to 8 bits as a stored map is),
    and the probability turned into an 8-bit mask at the image's size as the authors' test script saves it.

    An RGB-only PDFNet (built with ``model.use_depth=false``) sees no depth: ``depth_estimator`` is then ignored
    (set to None), no depth is computed, and depth maps passed in are not read.

    Args:
        model: a PDFNet (its depth head, if any, is dropped: inference does not need it).
        depth_estimator: computes depth when none is given; may be None if depth is always given.
        device: where the network runs.
        precision: ``fp32``; on a GPU ``fp16``/``bf16`` autocast; on a CPU with bf16 instructions ``bf16`` stores
            the weights in bfloat16 and runs oneDNN's bf16 kernels (elsewhere it warns and runs fp32).
        input_size: network input side (1024, as the paper), a multiple of 256; or ``"auto"``: each image's
            longer side rounded to the nearest multiple of 256, at most 2048 (``"auto:N"``: at most N), so that a
            large photo is seen at more of its detail, at a cost that grows faster than its pixel count.
        tta: the authors' test-time augmentation: horizontal flip x scales 0.75, 1, 1.25 (six passes), logits
            averaged (what their published numbers use); it also lets masks say how sure they are
            (``uncertainty=True``).
    """

    def __init__(
        self,
        model: PDFNet | OnnxNetwork,
        depth_estimator: DepthEstimator | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: int | str = 1024,
        tta: bool = False,
    ) -> None:
        self.device = torch.device(device)
        # whether the network reads depth (an ONNX graph always takes it)
        self.uses_depth: bool = getattr(model, "use_depth", True)
        self.depth_estimator = depth_estimator if self.uses_depth else None
        self.tta = tta
        if isinstance(model, OnnxNetwork):
            self._init_onnx(model, precision, input_size, tta)
            return
        # input_size: the fixed side, or the cap of the sides chosen per image (auto_size)
        fixed, self.input_size = parse_input_size(input_size, model.min_size)
        self.auto_size = fixed is None
        self.precision, why = effective_precision(self.device, precision)
        if why:
            warnings.warn(why, RuntimeWarning, stacklevel=2)
        model.depth_decoder = None
        self.model = model.to(self.device).eval()
        # on a CPU the whole network runs in the precision asked for, weights included (no autocast casts)
        self.dtype = torch.bfloat16 if self.device.type == "cpu" and self.precision == "bf16" else torch.float32
        if self.device.type == "cpu":
            # convolution weights stored as the channels-last activations read them (a fast path: no
            # per-call reorder), and in the run's precision
            self.model.to(dtype=self.dtype, memory_format=torch.channels_last)

    def _init_onnx(self, model: OnnxNetwork, precision: str, input_size: int | None, tta: bool) -> None:
        if input_size not in (None, model.input_size):
            raise InputError(
                f"{model.path} was exported for {model.input_size}x{model.input_size} inputs, not {input_size}; "
                "export another size with pdfnet export --input-size"
            )
        if tta:
            raise InputError(f"test-time augmentation needs other input sizes than {model.path}'s fixed one")
        if precision != "fp32":
            raise InputError(f"{model.path} runs in fp32 (the graph's precision), not {precision}")
        self.model, self.input_size, self.precision, self.dtype = model, model.input_size, "fp32", torch.float32
        self.auto_size = False

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        depth_model: str | DepthEstimator | None = DEFAULT_DEPTH_MODEL,
        variant: str | None = None,
        depth_kind: str | None = None,
        **kwargs,
    ) -> Predictor:
        """From one of our checkpoints or the authors' (``.pth``/``.pt``/``.safetensors``).

        Args:
            depth_model: ``small``/``base``/``large``, a repo id or folder for :class:`DepthEstimator` (any
                transformers depth estimator), an estimator, or None (then depth must be passed to predict). Not
                loaded for an RGB-only checkpoint.
            depth_kind: ``disparity`` or ``metric``, what a ``depth_model`` given by name predicts (None: known
                from its family; see :class:`DepthEstimator`).

        Raises:
            CheckpointError: the weights cannot be loaded (naming the file).
            DepthModelError: the depth model cannot be loaded.
        """
        device = resolve_device(device)
        # where it comes from, checked before seconds go into the network (an RGB-only one needs none)
        if isinstance(depth_model, str) and weights_read_depth(path):
            check_depth_model_source(depth_model)
        # the network first (its errors come before the depth model's seconds of loading), converted to the
        # run's precision and its float32 copy handed back before the depth model's file is read: the command
        # line's two 2048-pixel photos with Depth-Anything-V2-Large in bf16 on a CPU peaked at 3.4 GiB while
        # loading, with both float32 copies held (now about 2.0 GiB)
        predictor = cls(load_pdfnet(path, variant=variant), None, device=device, **kwargs)
        release_freed_memory()
        if not predictor.uses_depth:
            return predictor  # an RGB-only network: no depth model to load
        if isinstance(depth_model, str):
            depth_model = DepthEstimator(depth_model, device=device, precision=predictor.precision, kind=depth_kind)
        predictor.depth_estimator = depth_model
        return predictor

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        depth_model: str | DepthEstimator | None = DEFAULT_DEPTH_MODEL,
        providers: list[str] | None = None,
        depth_kind: str | None = None,
        **kwargs,
    ) -> Predictor:
        """From a graph written by ``pdfnet export`` (``pdfnet.onnx``), run by ONNX Runtime; ``depth_model`` as for
        :meth:`from_checkpoint`, including a ``depth.onnx`` graph. The input size is the graph's."""
        network = OnnxNetwork(path, providers)
        if isinstance(depth_model, str):
            depth_model = DepthEstimator(depth_model, device="cpu", kind=depth_kind)
        return cls(network, depth_model, device="cpu", input_size=kwargs.pop("input_size", None), **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "base", device: str | torch.device | None = None, **kwargs) -> Predictor:
        """The authors' published weights by name (``base``: ``Tennineee/PDFNet``; ``general``:
        ``Tennineee/PDFNet-General``), fetched once from the Hugging Face Hub, with Depth-Anything-V2-Large for
        depth unless ``depth_model`` says otherwise. Offline without them in the cache, the error comes at once."""
        return cls.from_checkpoint(download_weights(name), device=device, **kwargs)

    def _forward(self, image: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        if self.dtype != torch.float32:  # a CPU in bf16: weights and activations bfloat16, no autocast
            with autocast(self.device, "fp32"):
                depth = None if depth is None else depth.to(self.dtype)
                return self.model(image.to(self.dtype), depth).logits[0].float()
        with autocast(self.device, self.precision):
            return self.model(image, depth).logits[0].float()

    def logits(self, image: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, S, S) ImageNet-normalised, (B, 1, S, S) in [0, 1] (None for an RGB-only network) -> (B, 1, S, S)
        float32 logits.

        With ``tta``, the six passes of :meth:`tta_passes` averaged in that order (the authors' ttach setup).
        """
        if not self.tta:
            return self._forward(image, depth)
        return torch.stack(self.tta_passes(image, depth)).mean(dim=0)

    def tta_passes(self, image: torch.Tensor, depth: torch.Tensor) -> list[torch.Tensor]:
        """The six logit maps of the test-time augmentation, each (B, 1, S, S) float32 at the input's size.

        As the authors' ttach setup: for each flip (none, horizontal) and scale (0.75, 1, 1.25), image and depth
        are flipped, then resized to ``int(S * scale)`` (bilinear, corners not aligned; rounded to a multiple of
        256 where that is not one), the logits resized back to S and unflipped.
        """
        S = image.shape[-2:]
        outs = []
        for flip in (False, True):
            x, d = (image.flip(-1), _flipped(depth)) if flip else (image, depth)
            for scale in TTA_SCALES:
                side = tuple(self._tta_side(s, scale) for s in S)
                d_side = None if d is None else resize(d, side, align_corners=False)
                logits = self._forward(resize(x, side, align_corners=False), d_side)
                logits = resize(logits, S, align_corners=False)
                outs.append(logits.flip(-1) if flip else logits)
        return outs

    def _tta_side(self, side: int, scale: float) -> int:
        scaled = int(side * scale)  # ttach's rounding
        step = self.model.min_size
        return scaled if scaled % step == 0 else max(step, round(scaled / step) * step)

    def side_for(self, shape: Sequence[int]) -> int:
        """The network's input side for an image of ``shape`` (H, W, ...): the fixed ``input_size``, or with
        ``auto`` its longer side rounded to the nearest multiple of 256 (halves up), between 256 and the cap."""
        if not self.auto_size:
            return self.input_size
        step = self.model.min_size
        return min(self.input_size, max(step, math.floor(max(shape[:2]) / step + 0.5) * step))

    def processing_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        """(h, w) of an image of ``shape`` (H, W, ...) at the network's processing resolution, its aspect kept:
        the longer side :meth:`side_for`, the other scaled alike and rounded (at least 1)."""
        H, W = int(shape[0]), int(shape[1])
        side = self.side_for(shape)
        if H >= W:
            return side, max(1, math.floor(W * side / H + 0.5))
        return max(1, math.floor(H * side / W + 0.5)), side

    @torch.inference_mode()
    def predict_masks(
        self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """8-bit masks of several images: what ``test.py`` writes for each.

        Args:
            images: (H, W, 3) uint8 RGB each (sizes may differ).
            depths: optional depth per image, (H, W) uint8 as stored by ``depth_prep`` or float in [0, 1];
                computed by the depth model where missing. Not read by an RGB-only network.

        Returns:
            one (H, W) uint8 mask (0..255) per image, at that image's size.

        Raises:
            InputError: an image or depth of the wrong type, dtype or size.
        """
        return [p.mask for p in self.predict_all(images, depths)]

    @torch.inference_mode()
    def predict_all(
        self,
        images: Sequence[np.ndarray],
        depths: Sequence[np.ndarray | None] | None = None,
        uncertainty: bool = False,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[Prediction]:
        """Masks of several images with the depth maps they were made from and, with ``uncertainty``, how sure
        they are. The masks are those of :meth:`predict_masks`, bit for bit.

        Args:
            images, depths: as :meth:`predict_masks`.
            uncertainty: also measure how much the six test-time passes disagree (needs ``tta``).
            sizes: (h, w) of each mask (and uncertainty map), e.g. :meth:`processing_shape`; default: the
                image's size.

        Raises:
            InputError: an image or depth of the wrong type, dtype or size; ``uncertainty`` without ``tta``.
        """
        if uncertainty and not self.tta:
            raise InputError(
                "uncertainty needs test-time augmentation (tta=True; --tta on the command line): it is how much its "
                "six passes disagree"
            )
        images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        sizes = list(sizes) if sizes is not None else [im.shape[:2] for im in images]
        if not self.uses_depth:
            return self._predict_maps(images, None, sizes, uncertainty)
        depths = list(depths) if depths is not None else [None] * len(images)
        if len(depths) != len(images):
            raise InputError(f"got {len(images)} images but {len(depths)} depth maps")
        if sizes is not None and len(sizes) != len(images):
            raise InputError(f"got {len(images)} images but {len(sizes)} output sizes")
        maps = [
            None if d is None else check_depth(d, im.shape, f"depths[{i}]")
            for i, (d, im) in enumerate(zip(depths, images))
        ]
        missing = [i for i, d in enumerate(maps) if d is None]
        if missing:
            if self.depth_estimator is None:
                raise InputError("no depth given and the predictor has no depth model")
            for i, d in zip(missing, self.depth_estimator.estimate_batch([images[i] for i in missing])):
                maps[i] = depth_to_uint8(d)
        sizes = list(sizes) if sizes is not None else [im.shape[:2] for im in images]
        return self._predict_maps(images, maps, sizes, uncertainty)

    @torch.inference_mode()
    def masks_from_maps(
        self, images: Sequence[np.ndarray], depth_maps: Sequence[np.ndarray | None] | None
    ) -> list[np.ndarray]:
        """8-bit masks from (H, W, 3) uint8 images and 8-bit depth maps as stored (any size: each is resized to
        the input size as the image is, as the original loader does; None for an RGB-only network, which does
        not read them). The computation ``test.py`` runs."""
        predictions = self._predict_maps(images, depth_maps, [im.shape[:2] for im in images], False)
        return [p.mask for p in predictions]

    def _predict_maps(
        self,
        images: Sequence[np.ndarray],
        depth_maps: Sequence[np.ndarray | None] | None,
        sizes: Sequence[tuple[int, int]],
        uncertainty: bool,
    ) -> list[Prediction]:
        """The network on images whose depth maps are known, one batch per input side (one batch unless
        ``auto``). ``depth_maps`` is None for an RGB-only network."""
        if depth_maps is None or not self.uses_depth:
            depth_maps = [None] * len(images)
        groups: dict[int, list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.side_for(image.shape), []).append(i)
        results: list[Prediction | None] = [None] * len(images)
        for side, indices in groups.items():
            S = (side, side)
            x = torch.stack([image_to_tensor(images[i], S) for i in indices]).to(self.device)
            d = None
            if self.uses_depth:
                d = torch.stack([gray_to_tensor(depth_maps[i], S) for i in indices]).to(self.device)
            spreads = None
            if isinstance(self.model, OnnxNetwork):
                probs = self.model(x, d)
            elif uncertainty:
                passes = torch.stack(self.tta_passes(x, d))  # (6, B, 1, S, S) logits
                probs = passes.mean(dim=0).sigmoid()  # what logits() computes: the mask is unchanged
                spreads = pass_spread(passes.sigmoid())
            else:
                probs = self.logits(x, d).sigmoid()
            for j, i in enumerate(indices):
                mask = probability_to_mask(probs[j], sizes[i])
                measured = None
                if spreads is not None:
                    levels = resize_levels(spread_to_levels(spreads[j]), sizes[i])
                    measured = Uncertainty(levels, score(mask, levels))
                results[i] = Prediction(mask, depth_maps[i], measured)
        return results  # type: ignore[return-value]

    def predict_batch(
        self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """As :meth:`predict_masks`, as (H, W) float32 in [0, 1] (the 8-bit mask / 255)."""
        return [m.astype(np.float32) / 255.0 for m in self.predict_masks(images, depths)]

    def predict(
        self, image: np.ndarray, depth: np.ndarray | None = None, return_uncertainty: bool = False
    ) -> np.ndarray | tuple[np.ndarray, Uncertainty]:
        """(H, W, 3) uint8 RGB (and optional (H, W) depth) -> (H, W) float32 foreground probability in [0, 1].

        With ``return_uncertainty`` (needs ``tta``): ``(probability, uncertainty)``, the second an
        :class:`~pdfnet.inference.uncertainty.Uncertainty`: ``.map`` (H, W) uint8, the six test-time passes'
        standard deviation (0.5 -> 255), ``.boundary`` and ``.overall`` its mean over the mask's boundary band
        and over the image, in [0, 1].
        """
        if not return_uncertainty:
            return self.predict_batch([image], [depth])[0]
        [result] = self.predict_all([image], [depth], uncertainty=True)
        return result.mask.astype(np.float32) / 255.0, result.uncertainty

    def predict_mask(self, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB (and optional depth) -> (H, W) uint8 mask, the PNG ``test.py`` would write."""
        return self.predict_masks([image], [depth])[0]

    def cutout(self, image: np.ndarray, depth: np.ndarray | None = None, refine: bool = True) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 4) uint8 RGBA whose alpha is the predicted mask.

        With ``refine``, the colours of semi-transparent pixels are the foreground's, estimated by
        :func:`~pdfnet.inference.foreground.refine_foreground` (no fringe of the old background); without, the
        photo's.
        """
        return to_rgba(image, self.predict_mask(image, depth), refine=refine)


def _flipped(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.flip(-1)


def to_mask(prob: np.ndarray) -> np.ndarray:
    """[0, 1] probability -> uint8 0..255 (rounded; exact for :meth:`Predictor.predict`'s k / 255 values)."""
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def to_rgba(image: np.ndarray, mask: np.ndarray, refine: bool = False) -> np.ndarray:
    """The image with ``mask`` (uint8, or a [0, 1] probability) as its alpha channel: (H, W, 4) uint8; with
    ``refine``, its colours replaced by the foreground's (:func:`~pdfnet.inference.foreground.refine_foreground`)."""
    alpha = mask if mask.dtype == np.uint8 else to_mask(mask)
    if refine:
        image = refine_foreground(image, alpha)
    return np.dstack([image, alpha])
