"""Cutting objects out of photos: the PDFNet network with its depth model, and the pre- and post-processing of
``test.py`` (:mod:`pdfnet.data.processing`), so that a user's mask is the PNG ``test.py`` would write and score."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

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
)
from ..errors import InputError
from ..hub import DEFAULT_DEPTH_MODEL, PRETRAINED, check_depth_model_source, download_weights  # noqa: F401
from ..memory import release_freed_memory
from ..model.checkpoint import load_pdfnet
from ..model.layers import resize
from ..model.network import PDFNet
from ..model.onnx import OnnxNetwork
from ..runtime import autocast, effective_precision, resolve_device
from .foreground import refine_foreground

TTA_SCALES = (0.75, 1.0, 1.25)


class Predictor:
    """PDFNet inference on RGB images of any size.

    Each image is resized to ``input_size`` squared as the original loader resizes it (8-bit bilinear with
    aligned corners), run with its pseudo-depth (computed, or given; quantised to 8 bits as a stored map is),
    and the probability turned into an 8-bit mask at the image's size as the authors' test script saves it.

    Args:
        model: a PDFNet (its depth head, if any, is dropped: inference does not need it).
        depth_estimator: computes depth when none is given; may be None if depth is always given.
        device: where the network runs.
        precision: ``fp32``; on a GPU ``fp16``/``bf16`` autocast; on a CPU with bf16 instructions ``bf16`` stores
            the weights in bfloat16 and runs oneDNN's bf16 kernels (elsewhere it warns and runs fp32).
        input_size: network input side (1024, as the paper), a multiple of 256.
        tta: the authors' test-time augmentation: horizontal flip x scales 0.75, 1, 1.25 (six passes), logits
            averaged (what their published numbers use).
    """

    def __init__(
        self,
        model: PDFNet | OnnxNetwork,
        depth_estimator: DepthEstimator | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: int = 1024,
        tta: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.depth_estimator = depth_estimator
        self.tta = tta
        if isinstance(model, OnnxNetwork):
            self._init_onnx(model, precision, input_size, tta)
            return
        if not isinstance(input_size, int) or input_size < model.min_size or input_size % model.min_size:
            raise InputError(f"input_size must be a positive multiple of {model.min_size}, got {input_size}")
        self.input_size = input_size
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
                transformers depth estimator), an estimator, or None (then depth must be passed to predict).
            depth_kind: ``disparity`` or ``metric``, what a ``depth_model`` given by name predicts (None: known
                from its family; see :class:`DepthEstimator`).

        Raises:
            CheckpointError: the weights cannot be loaded (naming the file).
            DepthModelError: the depth model cannot be loaded.
        """
        device = resolve_device(device)
        if isinstance(depth_model, str):  # where it comes from, checked before seconds go into the network
            check_depth_model_source(depth_model)
        # the network first (its errors come before the depth model's seconds of loading), converted to the
        # run's precision and its float32 copy handed back before the depth model's file is read: the command
        # line's two 2048-pixel photos with Depth-Anything-V2-Large in bf16 on a CPU peaked at 3.4 GiB while
        # loading, with both float32 copies held (now about 2.0 GiB)
        predictor = cls(load_pdfnet(path, variant=variant), None, device=device, **kwargs)
        release_freed_memory()
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

    def _forward(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        if self.dtype != torch.float32:  # a CPU in bf16: weights and activations bfloat16, no autocast
            with autocast(self.device, "fp32"):
                return self.model(image.to(self.dtype), depth.to(self.dtype)).logits[0].float()
        with autocast(self.device, self.precision):
            return self.model(image, depth).logits[0].float()

    def logits(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) ImageNet-normalised, (B, 1, S, S) in [0, 1] -> (B, 1, S, S) float32 logits.

        With ``tta``, as the authors' ttach setup: for each flip (none, horizontal) and scale (0.75, 1, 1.25),
        image and depth are flipped, then resized to ``int(S * scale)`` (bilinear, corners not aligned; rounded
        to a multiple of 256 where that is not one), the logits resized back to S and unflipped, and the six
        averaged in that order.
        """
        if not self.tta:
            return self._forward(image, depth)
        S = image.shape[-2:]
        outs = []
        for flip in (False, True):
            x, d = (image.flip(-1), depth.flip(-1)) if flip else (image, depth)
            for scale in TTA_SCALES:
                side = tuple(self._tta_side(s, scale) for s in S)
                logits = self._forward(resize(x, side, align_corners=False), resize(d, side, align_corners=False))
                logits = resize(logits, S, align_corners=False)
                outs.append(logits.flip(-1) if flip else logits)
        return torch.stack(outs).mean(dim=0)

    def _tta_side(self, side: int, scale: float) -> int:
        scaled = int(side * scale)  # ttach's rounding
        step = self.model.min_size
        return scaled if scaled % step == 0 else max(step, round(scaled / step) * step)

    @torch.inference_mode()
    def predict_masks(
        self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """8-bit masks of several images: what ``test.py`` writes for each.

        Args:
            images: (H, W, 3) uint8 RGB each (sizes may differ).
            depths: optional depth per image, (H, W) uint8 as stored by ``depth_prep`` or float in [0, 1];
                computed by the depth model where missing.

        Returns:
            one (H, W) uint8 mask (0..255) per image, at that image's size.

        Raises:
            InputError: an image or depth of the wrong type, dtype or size.
        """
        images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        depths = list(depths) if depths is not None else [None] * len(images)
        if len(depths) != len(images):
            raise InputError(f"got {len(images)} images but {len(depths)} depth maps")
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
        return self.masks_from_maps(images, maps)

    @torch.inference_mode()
    def masks_from_maps(self, images: Sequence[np.ndarray], depth_maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        """8-bit masks from (H, W, 3) uint8 images and 8-bit depth maps as stored (any size: each is resized to
        the input size as the image is, as the original loader does). The computation ``test.py`` runs."""
        S = (self.input_size, self.input_size)
        x = torch.stack([image_to_tensor(im, S) for im in images]).to(self.device)
        d = torch.stack([gray_to_tensor(dp, S) for dp in depth_maps]).to(self.device)
        probs = self.model(x, d) if isinstance(self.model, OnnxNetwork) else self.logits(x, d).sigmoid()
        return [probability_to_mask(p, im.shape[:2]) for p, im in zip(probs, images)]

    def predict_batch(
        self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """As :meth:`predict_masks`, as (H, W) float32 in [0, 1] (the 8-bit mask / 255)."""
        return [m.astype(np.float32) / 255.0 for m in self.predict_masks(images, depths)]

    def predict(self, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB (and optional (H, W) depth) -> (H, W) float32 foreground probability in [0, 1]."""
        return self.predict_batch([image], [depth])[0]

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
