"""Cutting objects out of photos: the PDFNet network with its depth model, pre- and post-processing."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_pdfnet
from .depth import DEFAULT_DEPTH_MODEL, PRECISIONS, DepthEstimator
from .model import PDFNet

HUB_REPO = "Tennineee/PDFNet"
HUB_FILENAME = "PDFNet_Best.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TTA_SCALES = (0.75, 1.0, 1.25)


def download_weights(repo_id: str = HUB_REPO, filename: str = HUB_FILENAME) -> str:
    """The authors' checkpoint from the Hugging Face Hub, fetched once into the standard cache.

    Raises:
        RuntimeError: offline with no cached copy, saying what to pass instead.
    """
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo_id, filename=filename)
    except Exception as e:  # the hub raises several unrelated types for "offline"
        raise RuntimeError(
            f"cannot fetch {filename} from the Hugging Face Hub repo {repo_id} ({type(e).__name__}: {e}).\n"
            f"Download it elsewhere and pass its path as the weights (--weights PATH)."
        ) from e


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """PDFNet inference on RGB images of any size.

    Every image is resized to ``input_size`` squared (bilinear), run with its pseudo-depth, and the probability
    map resized back to the image's size (bilinear), as the authors' test script does.

    Args:
        model: a PDFNet (its depth head, if any, is dropped: inference does not need it).
        depth_estimator: computes depth when none is given; may be None if depth is always given.
        device: where the network runs.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (GPU).
        input_size: network input side (1024, as the paper), a multiple of 256.
        tta: average the logits over horizontal flips and scales 0.75, 1, 1.25, as the authors' test script.
    """

    def __init__(
        self,
        model: PDFNet,
        depth_estimator: DepthEstimator | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: int = 1024,
        tta: bool = False,
    ) -> None:
        if input_size % model.min_size:
            raise ValueError(f"input_size must be a multiple of {model.min_size}, got {input_size}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        model.depth_decoder = None
        self.model = model.to(self.device).eval()
        self.depth_estimator = depth_estimator
        self.precision = precision
        self.input_size = input_size
        self.tta = tta

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        depth_model: str | DepthEstimator | None = DEFAULT_DEPTH_MODEL,
        variant: str | None = None,
        **kwargs,
    ) -> Predictor:
        """From one of our checkpoints or the authors' (``PDFNet_Best.pth``); ``depth_model`` is a name or
        folder for :class:`DepthEstimator`, an estimator, or None (then depth must be passed to predict)."""
        device = torch.device(device) if device is not None else default_device()
        model = load_pdfnet(path, variant=variant)
        if isinstance(depth_model, str):
            depth_precision = kwargs.get("precision", "fp32") if device.type == "cuda" else "fp32"
            depth_model = DepthEstimator(depth_model, device=device, precision=depth_precision)
        return cls(model, depth_model, device=device, **kwargs)

    @classmethod
    def from_pretrained(
        cls, repo_id: str = HUB_REPO, filename: str = HUB_FILENAME, device: str | torch.device | None = None, **kwargs
    ) -> Predictor:
        """The authors' published weights (``release`` variant) from the Hugging Face Hub, fetched once, with
        Depth-Anything-V2-Large for depth."""
        return cls.from_checkpoint(download_weights(repo_id, filename), device=device, **kwargs)

    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def logits(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), (B, 1, S, S) at the input size -> (B, 1, S, S) float32 logits (TTA-averaged)."""
        if not self.tta:
            with self._autocast():
                return self.model(image, depth).logits[0].float()
        size = image.shape[-2:]
        total = torch.zeros(image.shape[0], 1, *size, device=image.device)
        for scale in TTA_SCALES:
            side = int(round(self.input_size * scale / self.model.min_size)) * self.model.min_size
            scaled = (_resize(image, (side, side)), _resize(depth, (side, side)))
            for flip in (False, True):
                x, d = (t.flip(-1) for t in scaled) if flip else scaled
                with self._autocast():
                    logits = self.model(x, d).logits[0].float()
                logits = logits.flip(-1) if flip else logits
                total += _resize(logits, size)
        return total / (2 * len(TTA_SCALES))

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[np.ndarray], depths: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """Foreground probability of several images.

        Args:
            images: (H, W, 3) uint8 RGB each (sizes may differ).
            depths: optional (H, W) depth per image, float in [0, 1] or uint8; computed when missing.

        Returns:
            one (H, W) float32 map in [0, 1] per image, at that image's size.
        """
        depths = list(depths) if depths is not None else [None] * len(images)
        missing = [i for i, d in enumerate(depths) if d is None]
        if missing:
            if self.depth_estimator is None:
                raise ValueError("no depth given and the predictor has no depth model")
            for i, d in zip(missing, self.depth_estimator.estimate_batch([images[i] for i in missing])):
                depths[i] = d
        S = (self.input_size, self.input_size)
        x = torch.cat([_image_tensor(im, S, self.device) for im in images])
        d = torch.cat([_depth_tensor(dp, S, self.device) for dp in depths])
        probs = self.logits(x, d).sigmoid()
        return [_resize(p[None], im.shape[:2])[0, 0].cpu().numpy() for p, im in zip(probs, images)]

    def predict(self, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB (and optional (H, W) depth) -> (H, W) float32 probability in [0, 1]."""
        return self.predict_batch([image], [depth])[0]

    def cutout(self, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 4) uint8 RGBA whose alpha is the predicted mask."""
        return to_rgba(image, self.predict(image, depth))


def to_mask(prob: np.ndarray) -> np.ndarray:
    """[0, 1] probability -> uint8 0..255."""
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def to_rgba(image: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The image with the mask as its alpha channel: (H, W, 4) uint8."""
    return np.dstack([image, to_mask(prob)])


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _image_tensor(image: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, S, S) ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
    x = _resize(x, size)
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    return (x - mean) / std


def _depth_tensor(depth: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(H, W) uint8 or float in [0, 1] -> (1, 1, S, S) float in [0, 1]."""
    d = torch.from_numpy(np.ascontiguousarray(depth)).to(device).float()
    if depth.dtype == np.uint8:
        d = d / 255.0
    elif depth.dtype == np.uint16:
        d = d / 65535.0
    return _resize(d[None, None], size)
