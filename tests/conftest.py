from pathlib import Path

import pytest
import torch

from pdfnet import ModelConfig


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A narrow network that runs a 256x256 forward in well under a second."""
    return ModelConfig(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, dim=16, pos_embed_grid=8
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_ARCH = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, dim=16, pos_embed_grid=8)


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory) -> str:
    """A randomly initialised Depth-Anything model with its image processor, saved like a Hub checkpoint."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    folder = tmp_path_factory.mktemp("tiny_depth_anything")
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=518,
        out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        reassemble_factors=[1, 0.5],
        neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_official_checkpoint(tmp_path_factory) -> str:
    """A narrow PDFNet (release variant, with its depth head) saved in the authors' key layout."""
    from pdfnet import build_pdfnet, to_official_state_dict

    torch.manual_seed(0)
    model = build_pdfnet(ModelConfig(variant="release", **TINY_ARCH))
    path = tmp_path_factory.mktemp("weights") / "PDFNet_tiny.pth"
    torch.save(to_official_state_dict(model), path)
    return str(path)


DEPTH_FOLDERS = ("depth_small", "depth_base", "depth_large", "depth_large_1024")


def make_toy_dis5k(
    root: Path,
    splits=("DIS-TR", "DIS-VD"),
    n: int = 3,
    layout=("images", "masks"),
    size=(96, 128),
    depths: tuple[str, ...] = (),
):
    """A DIS-5K tree of synthetic photos (a bright ellipse on noise), their masks and, for every folder in
    ``depths``, a depth map (the object nearer than a sloped background), at varied sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for i in range(n):
            H, W = size[0] + 16 * i, size[1] - 8 * i
            yy, xx = np.mgrid[:H, :W]
            mask = ((yy - H / 2) ** 2 / (H / 3) ** 2 + (xx - W / 2) ** 2 / (W / 3) ** 2) < 1
            image = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
            image[mask] = [220, 180, 60]
            (root / split / layout[0]).mkdir(parents=True, exist_ok=True)
            (root / split / layout[1]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / layout[0] / f"{split}_{i}.jpg")
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / layout[1] / f"{split}_{i}.png")
            for folder in depths:
                depth = (xx / W * 100 + mask * 120 + rng.integers(0, 20, (H, W))).astype(np.uint8)
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(depth).save(root / split / folder / f"{split}_{i}.png")
    return root


def make_thin_structures(images: Path, masks: Path, n: int, size=(96, 128), seed: int = 0, start: int = 0):
    """Photos of thin structures (a mesh, or curved wires 1-3 px wide) in a random bright colour on a textured
    background (smoothed colour noise and stripes), and their masks, as ``thin_<i>.jpg`` / ``thin_<i>.png``."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    H, W = size
    for i in range(start, start + n):
        noise = rng.random((max(H // 8, 2), max(W // 8, 2), 3)).astype(np.float32)
        yy, xx = np.mgrid[:H, :W]
        angle = rng.uniform(0, np.pi)
        stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 8))
        background = 0.6 * cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC) + 0.25 * stripes[..., None]
        image = np.clip((background + 0.1 * rng.random((H, W, 3))) * 200, 0, 255).astype(np.uint8)
        mask = np.zeros((H, W), np.uint8)
        if i % 3 == 0:  # a mesh in one part of the picture
            step = int(rng.integers(W // 8, W // 5))
            for x in range(int(rng.integers(0, step)), W, step):
                cv2.line(mask, (x, 0), (x + int(rng.integers(-W // 10, W // 10)), H), 255, 2)
            for y in range(int(rng.integers(0, step)), H, step):
                cv2.line(mask, (0, y), (W, y + int(rng.integers(-H // 10, H // 10))), 255, 2)
            keep = np.zeros_like(mask)
            y0, x0 = int(rng.integers(0, H // 3)), int(rng.integers(0, W // 3))
            keep[y0 : y0 + H // 2, x0 : x0 + W // 2] = 1
            mask *= keep
        else:  # wires
            for _ in range(int(rng.integers(3, 7))):
                steps = rng.integers(-W // 10, W // 10 + 1, (8, 2))
                points = np.cumsum(steps, axis=0) + [rng.integers(W // 5, W - W // 5), rng.integers(H // 5, H - H // 5)]
                cv2.polylines(mask, [points.astype(np.int32)], False, 255, int(rng.integers(1, 4)))
        colour = rng.integers(0, 256, 3)
        colour[rng.integers(0, 3)] = 255
        wire = mask > 127
        image[wire] = (0.2 * image[wire] + 0.8 * colour).astype(np.uint8)
        cv2.imwrite(str(images / f"thin_{i:03d}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(masks / f"thin_{i:03d}.png"), mask)
