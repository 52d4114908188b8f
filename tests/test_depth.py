"""Pseudo-depth: Depth-Anything-V2's infer_image pre- and post-processing around a transformers model, and the
depth_prep command, offline with a tiny Depth-Anything model."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_toy_dis5k
from PIL import Image

from pdfnet.data.depth import DepthEstimator, encode_depth, lower_bound_size, minmax, prepare_depth_maps
from pdfnet.errors import DepthModelError, InputError, OutputError
from pdfnet.io import FolderLock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        # 480x640 at 518: scale 518/480; 640 * 518/480 = 690.7 -> 49.3 patches -> 49 * 14 = 686
        ((480, 640), 518, (518, 686)),
        # 1200x1600 at 1024: 1024 / 14 = 73.1 rounds to 73 * 14 = 1022 < 1024, so up to 74 * 14 = 1036;
        # 1600 * 1024/1200 = 1365.3 -> 97.5 -> 98 * 14 = 1372 (transformers' processor gives 1022 here)
        ((1200, 1600), 1024, (1036, 1372)),
        # portrait 500x375: the width is the short side: 375 -> 518, 500 * 518/375 = 690.7 -> 686
        ((500, 375), 518, (686, 518)),
        ((1, 1), 518, (518, 518)),
        ((1024, 1024), 518, (518, 518)),
        # a 3x500 sliver: 500 * 518/3 = 86333.3 -> 6166.7 patches -> 6167 * 14 = 86338
        ((3, 500), 518, (518, 86338)),
    ],
)
def test_lower_bound_size(shape, size, expected):
    assert lower_bound_size(*shape, size) == expected


@pytest.fixture(scope="module")
def estimator(tiny_depth_model):
    return DepthEstimator(tiny_depth_model)


def test_preprocess_is_infer_images(estimator):
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    pixels = estimator.preprocess(image)
    assert pixels.shape == (1, 3, 518, 812) and pixels.dtype == torch.float32  # 110 * 518/70 = 814 -> 58 * 14
    # float64 image in [0, 1], OpenCV bicubic (no antialiasing), ImageNet normalisation, then float32
    resized = cv2.resize(image.astype(np.float64) / 255.0, (812, 518), interpolation=cv2.INTER_CUBIC)
    expected = ((resized - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels[0].numpy(), expected)
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    assert estimator.preprocess(red)[0, 0].mean() > estimator.preprocess(red)[0, 2].mean()  # RGB order kept


class _Ramp(torch.nn.Module):
    """A depth model whose prediction is [[0, 1], [2, 3]] whatever the input."""

    def forward(self, pixel_values):
        from types import SimpleNamespace

        B = pixel_values.shape[0]
        return SimpleNamespace(predicted_depth=torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(B, 2, 2))


def test_postprocess_resizes_with_aligned_corners_then_min_max(tiny_depth_model):
    estimator = DepthEstimator(tiny_depth_model)
    estimator.model = _Ramp()
    depth = estimator.estimate(np.zeros((3, 3, 3), np.uint8))
    # bilinear with aligned corners keeps the corners and puts the centre at the mean 1.5; min-max: / 3
    np.testing.assert_allclose(depth, [[0, 1 / 6, 1 / 3], [1 / 3, 0.5, 2 / 3], [2 / 3, 5 / 6, 1]], atol=1e-6)
    assert encode_depth(depth).tolist() == [[0, 42, 85], [85, 128, 170], [170, 212, 255]]  # round(255 d)


def test_estimator_returns_full_range_map_at_image_size(estimator):
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    depth = estimator.estimate(image)
    assert depth.shape == (70, 110) and depth.dtype == np.float32
    assert depth.min() == 0.0 and depth.max() == 1.0
    other = np.random.default_rng(1).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    batch = estimator.estimate_batch([image, other, image])  # sizes grouped into batches
    np.testing.assert_allclose(batch[0], depth, atol=1e-5)
    np.testing.assert_allclose(batch[2], depth, atol=1e-5)
    assert batch[1].shape == (50, 50)


def test_odd_shapes(estimator):
    assert estimator.estimate(np.full((1, 1, 3), 7, np.uint8)).shape == (1, 1)
    with pytest.raises(InputError, match="500x3 image is too elongated"):
        estimator.estimate(np.zeros((3, 500, 3), np.uint8))


def test_missing_model_is_explained(tmp_path):
    with pytest.raises(DepthModelError, match="--depth-model.*--depth"):
        DepthEstimator(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DepthModelError, match="not a transformers depth-model folder.*--depth-model"):
        DepthEstimator(str(tmp_path / "empty"))


def test_encode_depth():
    depth = np.array([[0.0, 0.5, 1.0, 0.3]], dtype=np.float32)
    # rounded as the authors' notebook (cv2.imwrite of 255 d): 127.5 -> 128, 76.5 -> 76 (half to even)
    assert encode_depth(depth).tolist() == [[0, 128, 255, 76]]
    assert encode_depth(depth, "png16").tolist() == [[0, 32768, 65535, 19660]]
    assert minmax(np.full((2, 2), 3.0)).max() == 0.0


def test_prepare_depth_maps_skips_existing_and_reports_bad_files(tiny_depth_model, tmp_path):
    root = make_toy_dis5k(tmp_path, n=2, layout=("im", "gt"))
    (root / "DIS-VD" / "im" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((3, 500, 3), np.uint8)).save(root / "DIS-VD" / "im" / "sliver.png")
    loads = []

    def make():
        loads.append(1)
        return DepthEstimator(tiny_depth_model)

    written, errors = prepare_depth_maps(root, ["DIS-TR", "DIS-VD"], make, "depth_small", batch_size=2)
    assert written == 4 and loads == [1]
    assert len(errors) == 2 and "broken.jpg" in errors[0] and "sliver.png" in errors[1]
    written, errors = prepare_depth_maps(root, ["DIS-TR"], make, "depth_small")
    assert written == 0 and errors == [] and loads == [1]  # nothing left to do: the model is not even loaded


def test_a_folder_in_use_is_refused(tiny_depth_model, tmp_path):
    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=1)
    out = root / "DIS-VD" / "depth_large"
    with FolderLock(out, "depth_prep"):  # another run holds the folder
        with pytest.raises(OutputError, match="in use by another depth_prep run"):
            prepare_depth_maps(root, ["DIS-VD"], lambda: DepthEstimator(tiny_depth_model), "depth_large")
    assert not out.exists()  # made for the lock, and removed with it: nothing was written
    # a lock left by a killed process is taken over
    out.mkdir()
    (out / ".pdfnet.lock").write_text("999999999\n")
    written, _ = prepare_depth_maps(root, ["DIS-VD"], lambda: DepthEstimator(tiny_depth_model), "depth_large")
    assert written == 1 and not (out / ".pdfnet.lock").exists()


def test_prepare_depth_command(tiny_depth_model, tmp_path):
    root = make_toy_dis5k(tmp_path, n=3)
    command = [sys.executable, str(ROOT / "depth_prep" / "prepare_depth.py"), "--data-root", str(root)]
    command += ["--splits", "DIS-TR", "DIS-VD", "--out-name", "depth_large", "--device", "cpu", "--model"]
    first = subprocess.run(command + [tiny_depth_model], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for split in ("DIS-TR", "DIS-VD"):
        for image_path in sorted((root / split / "images").iterdir()):
            path = root / split / "depth_large" / f"{image_path.stem}.png"
            depth = np.asarray(Image.open(path))
            assert depth.dtype == np.uint8
            assert depth.shape == np.asarray(Image.open(image_path)).shape[:2]
            assert depth.min() == 0 and depth.max() == 255
            assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the umask's permissions, not mkstemp's 0600
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/depth_large/*.png")}
    # the second run over finished splits loads nothing (not even a missing model) and writes nothing
    second = subprocess.run(command + ["no/such/model/"], capture_output=True, text=True)
    assert second.returncode == 0 and "wrote 0 depth map(s)" in second.stdout, second.stderr
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/depth_large/*.png")} == stamps


def test_maps_made_otherwise_are_named_and_redone_with_overwrite(tiny_depth_model, tmp_path):
    from pdfnet.provenance import read_options

    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=2)
    command = [sys.executable, "-m", "pdfnet", "depth", "--data-root", str(root), "--splits", "DIS-VD"]
    command += ["--device", "cpu", "--model", tiny_depth_model]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    maps = sorted((root / "DIS-VD" / "depth_large").glob("*.png"))
    assert read_options(maps[0])["input-size"] == "518" and read_options(maps[0])["model"].startswith("tiny_depth")
    stamps = [p.stat().st_mtime_ns for p in maps]
    other = subprocess.run(command + ["--input-size", "280"], capture_output=True, text=True)
    assert other.returncode == 0 and "wrote 0 depth map(s)" in other.stdout
    [note] = [line for line in other.stderr.splitlines() if line.startswith("note:")]
    assert "2 depth maps were made with other options: input-size=518 (now 280)" in note and "--overwrite" in note
    assert [p.stat().st_mtime_ns for p in maps] == stamps  # kept
    redone = subprocess.run(command + ["--input-size", "280", "--overwrite"], capture_output=True, text=True)
    assert "wrote 2 depth map(s)" in redone.stdout and read_options(maps[0])["input-size"] == "280"
    again = subprocess.run(command + ["--input-size", "280"], capture_output=True, text=True)
    assert "wrote 0 depth map(s)" in again.stdout and "note:" not in again.stderr


@pytest.mark.parametrize("flag", [["--batch-size", "0"], ["--batch-size", "-1"], ["--input-size", "3"]])
def test_prepare_depth_command_refuses_bad_numbers(flag, tmp_path):
    command = [sys.executable, str(ROOT / "depth_prep" / "prepare_depth.py"), "--data-root", str(tmp_path)]
    result = subprocess.run(command + ["--splits", "DIS-TR", *flag], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert flag[0] in result.stderr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cpu_bf16_depth_runs_the_blocked_attention(tiny_depth_model, monkeypatch):
    """In the CPU's bf16 mode the backbone's attention goes through the blocked fast path, and the depth stays
    as close to float32 as transformers' own bf16 attention leaves it."""
    from pdfnet.data import depth as depth_module
    from pdfnet.model import fastpath

    monkeypatch.setattr(fastpath, "_bf16_products_fast", lambda: True)  # whatever this CPU's vendor
    calls = []
    monkeypatch.setattr(depth_module, "attention", lambda *a: calls.append(1) or fastpath.attention(*a))
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    full = DepthEstimator(tiny_depth_model, precision="fp32").estimate(image)
    low = DepthEstimator(tiny_depth_model, precision="bf16")
    assert low.model.backbone.config._attn_implementation == depth_module.BLOCKED_ATTENTION

    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel ran instead of the blocked fast path")

    with monkeypatch.context() as m:
        m.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
        blocked = low.estimate(image)
    assert len(calls) == 2  # one per layer of the tiny backbone
    low.model.backbone.set_attn_implementation("sdpa")
    stock = low.estimate(image)
    assert np.abs(blocked - full).mean() < 2 * np.abs(stock - full).mean() + 1e-3
