"""Pseudo-depth from Depth-Anything-V2, through transformers: the depth PDFNet takes as its second input.

The authors made their depth maps with Depth-Anything-V2 at its default 518-pixel input (Small, Base and
Large; Large at 1024 for the loss target), resized to the image size and min-max normalised per image.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

DEPTH_MODELS = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}
DEFAULT_DEPTH_MODEL = DEPTH_MODELS["large"]
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_depth_model(name_or_path: str) -> str:
    """``small``/``base``/``large`` to their Hugging Face repos; anything else (a repo or a folder) unchanged."""
    return DEPTH_MODELS.get(name_or_path.lower(), name_or_path)


def depth_anything_processor():
    """Depth-Anything-V2's preprocessing: the shorter side scaled to 518 keeping the aspect ratio, sides
    multiples of 14, bicubic, ImageNet normalisation (what its Hub repos' preprocessor_config.json says)."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(
        do_resize=True,
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def _processor(name: str, auto_processor):
    """The model folder's own image processor, or Depth-Anything-V2's when a local folder has none."""
    if os.path.isdir(name) and not os.path.exists(os.path.join(name, "preprocessor_config.json")):
        return depth_anything_processor()
    return auto_processor.from_pretrained(name)


def minmax(depth: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (float32); a constant map becomes zeros."""
    depth = depth.astype(np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)


class DepthEstimator:
    """Depth-Anything-V2 (or any transformers depth model in that layout) as a function of RGB images.

    Args:
        name_or_path: a Hugging Face repo id, ``small``/``base``/``large``, or a local folder written by
            ``save_pretrained`` holding the model and its image processor.
        device: where the model runs.
        precision: ``fp32``, ``fp16`` or ``bf16`` (the latter two for GPUs).
        input_size: the side the processor resizes to, keeping the aspect ratio, a multiple of 14 (518 default).

    Raises:
        RuntimeError: the model cannot be loaded (offline without a local copy), saying what to pass instead.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_DEPTH_MODEL,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        input_size: int = 518,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.name = resolve_depth_model(name_or_path)
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision]
        self.input_size = input_size
        try:
            self.model = AutoModelForDepthEstimation.from_pretrained(self.name)
            self.processor = _processor(self.name, AutoImageProcessor)
        except (OSError, ValueError) as e:
            hint = "" if os.path.isdir(self.name) else " (no network or not in the Hugging Face cache?)"
            raise RuntimeError(
                f"cannot load the depth model {self.name!r}{hint}: {e}\n"
                "Pass a local Depth-Anything-V2 folder (save_pretrained layout) as the depth model, "
                "or ready-made depth maps."
            ) from e
        self.model.to(device=self.device, dtype=self.dtype).eval()

    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32, the processor's resize and normalisation."""
        size = {"height": self.input_size, "width": self.input_size}
        return self.processor(images=image_rgb, size=size, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def estimate_batch(self, images_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """Depth of several RGB images; images whose processed sizes agree run as one batch.

        Returns one (H, W) float32 map in [0, 1] per image, at that image's size (near is bright).
        """
        pixels = [self.preprocess(image) for image in images_rgb]
        results: list[np.ndarray | None] = [None] * len(images_rgb)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape), []).append(i)
        for indices in groups.values():
            batch = torch.cat([pixels[i] for i in indices]).to(self.device, self.dtype)
            predicted = self.model(pixel_values=batch).predicted_depth.float()  # (N, h, w)
            for j, i in enumerate(indices):
                H, W = images_rgb[i].shape[:2]
                # back to the image's size as Depth-Anything-V2's own infer_image does
                full = F.interpolate(predicted[j][None, None], size=(H, W), mode="bilinear", align_corners=True)
                results[i] = minmax(full[0, 0].cpu().numpy())
        return results  # type: ignore[return-value]

    def estimate(self, image_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 depth in [0, 1]."""
        return self.estimate_batch([image_rgb])[0]


def encode_depth(depth: np.ndarray, fmt: str = "png8") -> np.ndarray:
    """[0, 1] float depth -> uint8 (0..255, truncated as Depth-Anything-V2's own scripts do) or uint16."""
    if fmt == "png8":
        return (depth * 255.0).astype(np.uint8)
    if fmt == "png16":
        return np.rint(depth * 65535.0).astype(np.uint16)
    raise ValueError(f"unknown depth format {fmt!r}; expected png8 or png16")


def prepare_depth_maps(
    data_root: str | os.PathLike,
    splits: list[str],
    estimator: DepthEstimator,
    out_name: str = "depth_large",
    batch_size: int = 1,
    overwrite: bool = False,
    fmt: str = "png8",
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Write one depth map per image of each split to ``<root>/<split>/<out_name>/<stem>.png``.

    Maps keep the image's size and are min-max normalised per image. Existing maps are skipped unless
    ``overwrite``; every write is atomic. An unreadable image is reported and the rest still processed.

    Returns:
        (number of maps written, error messages naming the files at fault).
    """
    from tqdm import tqdm

    from .dis5k import split_images
    from .io import ImageReadError, read_image, write_image_atomic

    written, errors = 0, []
    for split in splits:
        try:
            images = split_images(data_root, split)
        except FileNotFoundError as e:
            errors.append(str(e))
            continue
        out_dir = os.path.join(data_root, split, out_name)
        todo = [p for p in images if overwrite or not os.path.exists(os.path.join(out_dir, p.stem + ".png"))]
        bar = tqdm(total=len(todo), desc=f"{split} -> {out_name}", unit="img", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch, arrays = [], []
            for path in todo[start : start + batch_size]:
                try:
                    arrays.append(read_image(path))
                    batch.append(path)
                except ImageReadError as e:
                    errors.append(str(e))
                    bar.update(1)
            if not batch:
                continue
            for path, depth in zip(batch, estimator.estimate_batch(arrays)):
                write_image_atomic(os.path.join(out_dir, path.stem + ".png"), encode_depth(depth, fmt))
                written += 1
                bar.update(1)
        bar.close()
    return written, errors
