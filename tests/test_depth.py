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

from pdfnet.data.depth import (
    DepthEstimator,
    depth_kind,
    encode_depth,
    lower_bound_size,
    minmax,
    near_is_bright,
    prepare_depth_maps,
)
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


# ------------------------------------------------------------------------ other families of depth estimators


def _save_tiny(folder: Path, family: str) -> str:
    """A randomly initialised depth model of another family with its image processor, saved as on the Hub."""
    import transformers as tf

    torch.manual_seed(0)
    neck = dict(neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])
    vit = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=16)
    if family == "dpt":  # DPT / MiDaS: relative inverse depth
        config = tf.DPTConfig(image_size=64, backbone_out_indices=[0, 1, 2, 3], head_in_index=-1, **vit, **neck)
        model = tf.DPTForDepthEstimation(config)
        processor = tf.DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False)
    elif family == "zoedepth":  # metric; its processor pads the image and its post-processing strips the padding
        backbone = tf.BeitConfig(
            image_size=64, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, use_relative_position_bias=True, **vit
        )
        bins = [{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}]
        config = tf.ZoeDepthConfig(
            backbone_config=backbone,
            backbone_hidden_size=32,
            bottleneck_features=16,
            num_relative_features=8,
            bin_embedding_dim=16,
            num_attractors=[4, 4, 2, 1],
            bin_configurations=bins,
            **neck,
        )
        model = tf.ZoeDepthForDepthEstimation(config)
        processor = tf.ZoeDepthImageProcessor(size={"height": 64, "width": 96}, ensure_multiple_of=32)
    else:  # GLPN: metric; its processor keeps the image's size, rounded down to multiples of 32
        config = tf.GLPNConfig(
            depths=[1, 1, 1, 1],
            hidden_sizes=[8, 16, 32, 64],
            num_attention_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
            decoder_hidden_size=16,
            max_depth=10,
        )
        model = tf.GLPNForDepthEstimation(config)
        processor = tf.GLPNImageProcessor(size_divisor=32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_families(tmp_path_factory) -> dict[str, str]:
    return {family: _save_tiny(tmp_path_factory.mktemp(family), family) for family in ("dpt", "zoedepth", "glpn")}


class _RampAcross(torch.nn.Module):
    """A depth model whose prediction grows from the left edge of its input to the right: 1 .. 2."""

    def forward(self, pixel_values):
        from types import SimpleNamespace

        B, _, h, w = pixel_values.shape
        return SimpleNamespace(predicted_depth=torch.linspace(1.0, 2.0, w).expand(B, h, w).clone())


@pytest.mark.parametrize("family, kind", [("dpt", "disparity"), ("zoedepth", "metric"), ("glpn", "metric")])
def test_other_families_run_with_their_processor_and_near_is_bright(tiny_families, family, kind):
    estimator = DepthEstimator(tiny_families[family])
    assert estimator.model_type == family and estimator.kind == kind and estimator.processor is not None
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    # the model's own image processor makes its input (DPT: 64x64; ZoeDepth: padded, then 64x96; GLPN: 64x96)
    expected = estimator.processor(images=image, return_tensors="pt")["pixel_values"]
    assert torch.equal(estimator.preprocess(image), expected)
    depth = estimator.estimate(image)
    assert depth.shape == (70, 110) and depth.dtype == np.float32 and depth.min() == 0 and depth.max() == 1
    batch = estimator.estimate_batch([image, image[:50, :60]])
    np.testing.assert_allclose(batch[0], depth, atol=1e-5)
    assert batch[1].shape == (50, 60)
    # the model says the right of the picture is larger: near for a disparity, far for a metric depth
    estimator.model = _RampAcross()
    ramp = estimator.estimate(image)
    columns = ramp.mean(axis=0)
    near_right = kind == "disparity"
    assert (np.diff(columns) > 0).all() if near_right else (np.diff(columns) < 0).all()
    assert ramp[:, -1 if near_right else 0].min() > 0.99 and ramp[:, 0 if near_right else -1].max() < 0.01
    # the override says what the model predicts: the other kind flips the map
    flipped = DepthEstimator(tiny_families[family], kind="metric" if near_right else "disparity")
    flipped.model = _RampAcross()
    assert (np.diff(flipped.estimate(image).mean(axis=0)) > 0).all() != near_right


def test_near_is_bright_inverts_metric_depth():
    d = np.array([[1.0, 2.0, 4.0]])
    # disparity kept: (d - 1) / 3; metric as 1 / d = 1, 1/2, 1/4, then min-max: (1/d - 1/4) / (3/4)
    np.testing.assert_allclose(near_is_bright(d, "disparity"), [[0, 1 / 3, 1]], atol=1e-7)
    np.testing.assert_allclose(near_is_bright(d, "metric"), [[1, 1 / 3, 0]], atol=1e-7)
    # depths under a thousandth of the largest are raised to it: 0 and -3 count as 1 (1000 / 1000)
    np.testing.assert_allclose(near_is_bright(np.array([[0.0, -3.0, 1.0, 1000.0]]), "metric"), [[1, 1, 1, 0]])
    assert near_is_bright(np.zeros((2, 2)), "metric").max() == 0  # nothing positive: no near, no far
    # an affine-invariant disparity a / d + b of a metric depth d gives the same map as d itself
    depth = np.random.default_rng(0).uniform(0.5, 30.0, (8, 8))
    disparity = 3.0 / depth + 7.0
    np.testing.assert_allclose(near_is_bright(disparity, "disparity"), near_is_bright(depth, "metric"), atol=1e-5)


def test_depth_kind_by_family():
    from transformers import DepthAnythingConfig, DPTConfig, GLPNConfig

    assert depth_kind(DepthAnythingConfig()) == "disparity"
    assert depth_kind(DepthAnythingConfig(depth_estimation_type="metric", max_depth=20)) == "metric"
    assert depth_kind(DPTConfig()) == "disparity" and depth_kind(GLPNConfig()) == "metric"
    from types import SimpleNamespace

    assert depth_kind(SimpleNamespace(model_type="some_new_family")) is None


def test_unknown_family_needs_its_kind(tiny_families, monkeypatch):
    from pdfnet.data import depth as depth_module

    real = depth_module.load_depth_model

    def load_as_new_family(name, dtype=torch.float32):
        model = real(name, dtype)
        model.config.model_type = "some_new_family"
        return model

    monkeypatch.setattr(depth_module, "load_depth_model", load_as_new_family)
    with pytest.raises(DepthModelError, match="some_new_family model.*--depth-kind disparity\\|metric"):
        DepthEstimator(tiny_families["dpt"])
    assert DepthEstimator(tiny_families["dpt"], kind="metric").kind == "metric"


def test_other_families_refuse_what_they_cannot_take(tiny_families, tmp_path):
    with pytest.raises(DepthModelError, match="its image processor sets its input size.*--input-size"):
        DepthEstimator(tiny_families["dpt"], input_size=1024)
    glpn = DepthEstimator(tiny_families["glpn"])
    with pytest.raises(InputError, match="image processor of .* cannot take a 20x20 image"):
        glpn.input_shape(np.zeros((20, 20, 3), np.uint8))  # GLPN rounds 20 down to 0 pixels
    import shutil

    shutil.copytree(tiny_families["dpt"], tmp_path / "no_processor")
    (tmp_path / "no_processor" / "preprocessor_config.json").unlink()
    with pytest.raises(DepthModelError, match="no image processor for .*no_processor"):
        DepthEstimator(str(tmp_path / "no_processor"))


def test_depth_command_with_other_families(tiny_families, tmp_path):
    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=2)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "DIS-VD" / "images" / "tiny.png")
    for family in ("dpt", "zoedepth", "glpn"):
        command = [sys.executable, "-m", "pdfnet", "depth", "--data-root", str(root), "--splits", "DIS-VD"]
        command += ["--model", tiny_families[family], "--out-name", f"depth_{family}", "--device", "cpu"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        failed = family == "glpn"  # the 20x20 image: named, the others written
        assert result.returncode == int(failed), result.stderr
        assert ("tiny.png" in result.stderr) == failed and "Traceback" not in result.stderr
        for i in range(2):
            image = np.asarray(Image.open(root / "DIS-VD" / "images" / f"DIS-VD_{i}.jpg"))
            depth = np.asarray(Image.open(root / "DIS-VD" / f"depth_{family}" / f"DIS-VD_{i}.png"))
            assert depth.dtype == np.uint8 and depth.shape == image.shape[:2]
            assert depth.min() == 0 and depth.max() == 255
    # another model into the same folder: its maps were made otherwise (the model's content is recorded), kept
    # and named; --depth-kind is recorded too, so the other sign is not taken for the same maps
    from pdfnet.provenance import read_options

    maps = sorted((root / "DIS-VD" / "depth_dpt").glob("DIS-VD_*.png"))
    assert read_options(maps[0])["model"].startswith("dpt") and "kind" not in read_options(maps[0])
    stamps = [p.stat().st_mtime_ns for p in maps]
    for other in (["--model", tiny_families["zoedepth"]], ["--model", tiny_families["dpt"], "--depth-kind", "metric"]):
        rerun = command[:-4] + other + ["--out-name", "depth_dpt"]
        result = subprocess.run(rerun, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0 and "wrote 0 depth map(s)" in result.stdout, result.stderr
        [note] = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        # DIS-VD_0, DIS-VD_1 and tiny (20x20 is too small for GLPN alone)
        assert "3 depth maps were made with other options" in note and ("kind=?" in note) == ("--depth-kind" in other)
        assert [p.stat().st_mtime_ns for p in maps] == stamps
    redone = subprocess.run(rerun + ["--overwrite"], capture_output=True, text=True, cwd=ROOT)
    assert redone.returncode == 0 and "wrote 3 depth map(s)" in redone.stdout, redone.stderr
    assert read_options(maps[0])["kind"] == "metric"
    bad = subprocess.run(
        command[:-4] + ["--model", tiny_families["dpt"], "--input-size", "1024", "--out-name", "depth_x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and "--input-size" in bad.stderr and "Traceback" not in bad.stderr


def test_predict_with_another_family(tiny_families, tiny_official_checkpoint, tmp_path):
    """``predict --depth-model`` takes the folder of any transformers depth estimator, and --depth-kind."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photo)
    command = [sys.executable, "-m", "pdfnet", "predict", str(photo), "--weights", tiny_official_checkpoint]
    command += ["--input-size", "256", "--format", "mask", "--device", "cpu", "--depth-model", tiny_families["glpn"]]
    result = subprocess.run(command + ["--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(tmp_path / "a" / "photo.png")).shape == (60, 80)
    flipped = subprocess.run(
        command + ["--depth-kind", "disparity", "--out", str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT
    )
    assert flipped.returncode == 0, flipped.stderr
    # the other sign is another depth map, so another mask (the tiny network's output depends on its depth)
    assert not np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / "photo.png")), np.asarray(Image.open(tmp_path / "b" / "photo.png"))
    )


def _hub_cache(hf_home: Path, repo_id: str, folder: str, processor: bool) -> None:
    """``folder``'s files as the Hugging Face cache holds a downloaded repo (without the image processor's)."""
    import shutil

    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    if not processor:
        (repo / "snapshots" / ("0" * 40) / "preprocessor_config.json").unlink()


def test_another_family_from_the_hub_cache_offline(tiny_families, tmp_path):
    """A repo id of another family, in the Hugging Face cache, with the Hub unreachable: the model and its
    image processor load from the cache alone; without the processor in the cache, one line at once."""
    import time

    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=1)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    _hub_cache(tmp_path / "hf", "someone/tiny-dpt", tiny_families["dpt"], processor=True)
    _hub_cache(tmp_path / "hf", "someone/no-processor", tiny_families["dpt"], processor=False)
    command = [sys.executable, "-m", "pdfnet", "depth", "--data-root", str(root), "--splits", "DIS-VD"]
    command += ["--device", "cpu", "--out-name", "depth_hub", "--model"]
    result = subprocess.run(command + ["someone/tiny-dpt"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0 and "wrote 1 depth map(s)" in result.stdout, result.stderr
    from pdfnet.provenance import read_options

    assert read_options(root / "DIS-VD" / "depth_hub" / "DIS-VD_0.png")["model"] == "someone/tiny-dpt"
    began = time.monotonic()
    command[-2] = "depth_none"
    result = subprocess.run(command + ["someone/no-processor"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert time.monotonic() - began < 20, result.stderr  # no retries of the Hub client first
    [line] = result.stderr.strip().splitlines()[-1:]
    assert result.returncode == 1 and line.startswith("error: no image processor for someone/no-processor"), line
    assert "Traceback" not in result.stderr, result.stderr
