"""The one pre- and post-processing of PDFNet's inputs and outputs, as the authors' loader and test script make
them. ``test.py``, validation, training samples and the :class:`~pdfnet.Predictor` all go through it, so a
user's cutout is exactly what ``test.py`` would score.

- Photos and depth maps are resized as 8-bit tensors, bilinearly with aligned corners (the original loader
  interpolates the ``uint8`` arrays it reads; the result is rounded back to 8 bits), then scaled to [0, 1];
  photos are ImageNet-normalised. Masks are resized nearest-neighbour.
- A depth map computed in memory is first quantised to 8 bits exactly as a stored map is
  (:func:`depth_to_uint8`), so the network sees the same input whether the map was written to disk or not.
- The probability at the network's size becomes an 8-bit map by truncation (torchvision's ``ToPILImage``:
  ``mul(255).byte()``), then goes back to the photo's size with PIL's bilinear resize (which antialiases when
  shrinking), as the authors' ``Test.py`` saves its predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from ..runtime import IMAGENET_MEAN, IMAGENET_STD


def _resize_uint8(x: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(H, W, C) or (H, W) uint8 -> (C, S, S) uint8, bilinear with aligned corners on the 8-bit values."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)
    return t[0]


def resize_image(image: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32 in [0, 1], resized as the original loader does."""
    return _resize_uint8(check_image(image), size).float() / 255.0


def normalize_image(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def denormalize_image(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalize_image`, clamped to [0, 1] (for pictures of samples)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return (x * std + mean).clamp(0, 1)


def image_to_tensor(image: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32, resized as the original loader does and ImageNet-normalised."""
    return normalize_image(resize_image(image, size))


def gray_to_tensor(gray: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(H, W) uint8 depth map -> (1, S, S) float32 in [0, 1], resized as the original loader does."""
    return _resize_uint8(gray, size).float() / 255.0


def mask_to_tensor(mask: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """(H, W) uint8 mask -> (1, S, S) float32 in [0, 1], nearest-neighbour, as the original loader."""
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    return F.interpolate(m, size=tuple(int(s) for s in size), mode="nearest")[0] / 255.0


def depth_to_uint8(depth: np.ndarray) -> np.ndarray:
    """A min-max normalised depth in [0, 1] (float) -> the 8-bit map ``depth_prep`` stores: round(255 d), as the
    authors' notebook (``cv2.imwrite`` of ``d * 255.0`` rounds). uint8 maps pass through unchanged."""
    if depth.dtype == np.uint8:
        return depth
    return np.rint(depth.astype(np.float32) * np.float32(255.0)).clip(0, 255).astype(np.uint8)


def probability_to_mask(prob: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """(S, S) or (1, S, S) probability in [0, 1] at the network's size -> (H, W) uint8 at ``size`` (H, W), as
    the authors' test script saves it: truncated to 8 bits, then PIL's bilinear resize."""
    prob = prob.detach().float().reshape(prob.shape[-2:]).cpu()
    levels = prob.mul(255).byte().numpy()  # torchvision's ToPILImage: truncation, not rounding
    return resize_levels(levels, size)


def resize_levels(levels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(h, w) uint8 -> (H, W) uint8 at ``size`` (H, W) by PIL's bilinear resize, as the authors' test script
    resizes its masks (the same array when the size is already right)."""
    H, W = int(size[0]), int(size[1])
    if levels.shape == (H, W):
        return levels
    return np.asarray(Image.fromarray(levels, mode="L").resize((W, H), Image.BILINEAR))


def check_image(image: object, what: str = "image") -> np.ndarray:
    """``image`` if it is an (H, W, 3) uint8 RGB array, else an InputError saying what was expected."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array (H, W, 3) of uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{what} must be (H, W, 3) uint8 RGB (e.g. pdfnet.io.read_image), got {image.dtype} {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{what} is empty: {image.shape}")
    return image


def check_depth(depth: object, shape: Sequence[int], what: str = "depth") -> np.ndarray:
    """``depth`` as the 8-bit map the network reads: (H, W) uint8 as stored, or float in [0, 1] (quantised as a
    stored map is); InputError for another dtype, range or size (``shape`` is the image's (H, W))."""
    if not isinstance(depth, np.ndarray):
        raise InputError(f"{what} must be a numpy array (H, W), uint8 or float in [0, 1], got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise InputError(f"{what} must be (H, W), got shape {depth.shape}")
    if tuple(depth.shape) != tuple(shape[:2]):
        raise InputError(f"{what} is {depth.shape[0]}x{depth.shape[1]} but the image is {shape[0]}x{shape[1]}")
    if depth.dtype == np.uint8:
        return depth
    if np.issubdtype(depth.dtype, np.floating):
        lo, hi = float(np.nanmin(depth)), float(np.nanmax(depth))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise InputError(f"{what} is float but not within [0, 1] (range {lo:g}..{hi:g}); min-max normalise it")
        return depth_to_uint8(depth)
    raise InputError(f"{what} must be uint8 (0..255) or float in [0, 1], got {depth.dtype}")
