"""Pseudo-depth: the estimator and the depth_prep command, offline with a tiny Depth-Anything model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_toy_dis5k
from PIL import Image

from pdfnet.depth import DepthEstimator, encode_depth, minmax, prepare_depth_maps

ROOT = Path(__file__).resolve().parents[1]


def test_estimator_returns_full_range_map_at_image_size(tiny_depth_model):
    estimator = DepthEstimator(tiny_depth_model)
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    depth = estimator.estimate(image)
    assert depth.shape == (70, 110) and depth.dtype == np.float32
    assert depth.min() == 0.0 and depth.max() == 1.0
    # batched estimation of differently sized images equals one at a time
    other = np.random.default_rng(1).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    batch = estimator.estimate_batch([image, other, image])
    np.testing.assert_allclose(batch[0], depth, atol=1e-5)
    np.testing.assert_allclose(batch[2], depth, atol=1e-5)
    assert batch[1].shape == (50, 50)


def test_estimator_sees_rgb_once(tiny_depth_model):
    # the processor gets the image exactly as given (RGB): feeding it swapped channels changes the result
    estimator = DepthEstimator(tiny_depth_model)
    image = np.zeros((56, 56, 3), dtype=np.uint8)
    image[..., 0] = 255
    pixels = estimator.preprocess(image)
    assert pixels[0, 0].mean() > pixels[0, 2].mean()  # red stays in channel 0


def test_folder_without_processor_gets_depth_anythings(tiny_depth_model, tmp_path):
    import shutil

    folder = tmp_path / "model_only"
    shutil.copytree(tiny_depth_model, folder)
    (folder / "preprocessor_config.json").unlink()
    estimator = DepthEstimator(str(folder))
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    np.testing.assert_allclose(estimator.estimate(image), DepthEstimator(tiny_depth_model).estimate(image), atol=1e-6)


def test_missing_model_is_explained(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load the depth model"):
        DepthEstimator(str(tmp_path / "nowhere"))


def test_encode_depth():
    depth = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert encode_depth(depth).tolist() == [[0, 127, 255]]  # truncated, as Depth-Anything-V2's scripts
    assert encode_depth(depth, "png16").tolist() == [[0, 32768, 65535]]
    assert minmax(np.full((2, 2), 3.0)).max() == 0.0


def test_prepare_depth_maps_skips_existing_and_reports_bad_files(tiny_depth_model, tmp_path):
    root = make_toy_dis5k(tmp_path, n=2, layout=("im", "gt"))
    (root / "DIS-VD" / "im" / "broken.jpg").write_bytes(b"not a jpeg")
    estimator = DepthEstimator(tiny_depth_model)
    written, errors = prepare_depth_maps(root, ["DIS-TR", "DIS-VD"], estimator, "depth_small", batch_size=2)
    assert written == 4
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    written, _ = prepare_depth_maps(root, ["DIS-TR", "DIS-VD"], estimator, "depth_small")
    assert written == 0  # resumable: nothing left to do


def test_prepare_depth_command(tiny_depth_model, tmp_path):
    root = make_toy_dis5k(tmp_path, n=3)
    command = [
        sys.executable,
        str(ROOT / "depth_prep" / "prepare_depth.py"),
        "--data-root",
        str(root),
        "--splits",
        "DIS-TR",
        "DIS-VD",
        "--model",
        tiny_depth_model,
        "--out-name",
        "depth_large",
        "--device",
        "cpu",
    ]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for split in ("DIS-TR", "DIS-VD"):
        for image_path in sorted((root / split / "images").iterdir()):
            depth = np.asarray(Image.open(root / split / "depth_large" / f"{image_path.stem}.png"))
            assert depth.dtype == np.uint8
            assert depth.shape == np.asarray(Image.open(image_path)).shape[:2]
            assert depth.min() == 0 and depth.max() == 255
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/depth_large/*.png")}
    second = subprocess.run(command, capture_output=True, text=True)
    # the second run over finished splits estimates and writes nothing
    assert second.returncode == 0 and "wrote 0 depth maps" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/depth_large/*.png")} == stamps
