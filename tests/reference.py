"""Access to the reference outputs of the authors' code (copied from shared/reference into tests/data).

The references were made with deterministic synthetic weights: every float tensor of the authors' state dict
is drawn from its own generator seeded by crc32(key) XOR salt, scaled by its role. ``synthetic_state_dict``
rebuilds exactly those weights from a key manifest.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def manifest(variant: str) -> dict:
    name = "official_state_dict_manifest.json" if variant == "cvpr" else "release_state_dict_manifest.json"
    return json.loads((DATA / name).read_text())


def synthetic_tensor(key: str, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ salt) & 0x7FFFFFFF)
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    if len(shape) == 1:  # norm scales around one, biases around zero
        return 1.0 + 0.1 * z if key.endswith(".weight") else 0.02 * z
    if "relative_position_bias_table" in key or "absolute_pos_embed" in key:
        return 0.02 * z
    return z / math.sqrt(math.prod(shape[1:]))  # fan-in scaling


def synthetic_state_dict(variant: str, salt: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """The reference weights in the authors' layout (float tensors only, Sobel kernels left out)."""
    return {
        k: synthetic_tensor(k, tuple(v["shape"]), salt)
        for k, v in manifest(variant).items()
        if v["dtype"] == "float32" and not k.startswith("IntegrityPriorLoss") and k.startswith(prefix)
    }


def load_case(variant: str) -> dict[str, np.ndarray]:
    name = "parity_1024.npz" if variant == "cvpr" else "parity_release_1024.npz"
    return dict(np.load(DATA / name))


def case_inputs(case: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    """image (1, 3, H, W) normalised, depth, depth_target, mask (1, 1, H, W) in [0, 1], as the original feeds them."""
    image = (case["image"].astype(np.float32) / 255.0 - MEAN) / STD
    image = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]

    def plane(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0)[None, None]

    return image, plane(case["depth"]), plane(case["depth_target"]), plane(case["mask"])
