"""Inference for users: the Predictor API, the hub download path and ``python -m pdfnet predict``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdfnet import predictor as predictor_module
from pdfnet.cli import example_image, main
from pdfnet.io import read_image
from pdfnet.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(tiny_official_checkpoint, tiny_depth_model):
    return Predictor.from_checkpoint(
        tiny_official_checkpoint, device="cpu", depth_model=tiny_depth_model, input_size=256
    )


def test_predict_and_cutout(predictor):
    image = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    prob = predictor.predict(image)
    assert prob.shape == (90, 140) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    rgba = predictor.cutout(image)
    assert rgba.shape == (90, 140, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], image)
    # a given depth map is used instead of the estimator's, and a batch equals single calls
    depth = np.linspace(0, 1, 90 * 140, dtype=np.float32).reshape(90, 140)
    batch = predictor.predict_batch([image, image[:60]], [depth, None])
    np.testing.assert_allclose(batch[0], predictor.predict(image, depth), atol=1e-5)
    assert batch[1].shape == (60, 140)


def test_tta_runs_flips_and_scales(tiny_official_checkpoint, tiny_depth_model):
    tta = Predictor.from_checkpoint(
        tiny_official_checkpoint, device="cpu", depth_model=tiny_depth_model, input_size=512, tta=True
    )
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    prob = tta.predict(image)
    assert prob.shape == (64, 64) and np.isfinite(prob).all()


def test_from_pretrained_downloads_the_authors_checkpoint(monkeypatch, tiny_official_checkpoint, tiny_depth_model):
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return tiny_official_checkpoint

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    pred = Predictor.from_pretrained(device="cpu", depth_model=tiny_depth_model, input_size=256)
    assert calls == [("Tennineee/PDFNet", "PDFNet_Best.pth")]
    assert pred.model.variant == "release" and pred.model.depth_decoder is None


def test_offline_without_weights_is_explained(monkeypatch, tmp_path, capsys):
    import huggingface_hub

    def offline(repo_id, filename):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match="--weights PATH"):
        predictor_module.download_weights()
    assert main(["predict", "--out", str(tmp_path)]) == 2
    assert "--weights PATH" in capsys.readouterr().err


def _mixed_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 90, 4), dtype=np.uint8), mode="RGBA").save(folder / "with_alpha.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return {"photo": (70, 100), "grey": (64, 48), "with_alpha": (40, 90)}


def test_cli_mixed_inputs(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    sizes = _mixed_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--out", str(out), "--weights", tiny_official_checkpoint]
    status = main(
        args + ["--depth-model", tiny_depth_model, "--input-size", "256", "--device", "cpu", "--batch-size", "2"]
    )
    assert status == 1  # one input failed
    assert "corrupt.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["grey.png", "photo.png", "with_alpha.png"]
    for stem, (H, W) in sizes.items():
        result = Image.open(out / f"{stem}.png")
        assert result.mode == "RGBA" and result.size == (W, H)


def test_cli_masks_from_given_depth(tiny_official_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.jpg")
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8), (30, 1))).save(tmp_path / "depth" / "a.png")
    args = ["predict", str(tmp_path / "in" / "*.jpg"), "--out", str(tmp_path / "out"), "--format", "both"]
    args += ["--weights", tiny_official_checkpoint, "--depth", str(tmp_path / "depth"), "--input-size", "256"]
    assert main(args + ["--device", "cpu"]) == 0
    mask = Image.open(tmp_path / "out" / "a_mask.png")
    assert mask.mode == "L" and mask.size == (40, 30)
    assert Image.open(tmp_path / "out" / "a_rgba.png").mode == "RGBA"


def test_cli_default_is_the_bundled_photo(tiny_official_checkpoint, tiny_depth_model, tmp_path):
    command = [sys.executable, "-m", "pdfnet", "predict", "--out", str(tmp_path), "--weights", tiny_official_checkpoint]
    command += ["--depth-model", tiny_depth_model, "--input-size", "256", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    cutout = Image.open(tmp_path / f"{example_image().stem}.png")
    assert cutout.mode == "RGBA" and cutout.size == Image.open(example_image()).size


def test_read_image_conversions(tmp_path):
    rng = np.random.default_rng(0)
    # EXIF orientation 6 (rotate 90 degrees clockwise to view): a 20x30 file is a 30x20 photo
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (30, 20, 3)
    # 16-bit grey scales to 8 bits: 65535 -> 255, 257 * 100 -> 100
    Image.fromarray(np.array([[65535, 25700]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png")[0, :, 0].tolist() == [255, 100]
    # palette images become RGB
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (8, 8, 3)
