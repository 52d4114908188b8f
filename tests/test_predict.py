"""Inference for users: the Predictor API, the shared processing, the hub download path and ``pdfnet predict``
with good and bad inputs."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pdfnet import runtime
from pdfnet.cli import main
from pdfnet.data.processing import gray_to_tensor, probability_to_mask, resize_image
from pdfnet.errors import CheckpointError, InputError
from pdfnet.inference import predictor as predictor_module
from pdfnet.inference.foreground import refine_foreground
from pdfnet.inference.predictor import Predictor
from pdfnet.io import example_image, read_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor(tiny_official_checkpoint, tiny_depth_model):
    return Predictor.from_checkpoint(
        tiny_official_checkpoint, device="cpu", depth_model=tiny_depth_model, input_size=256
    )


def _image(h=90, w=140, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- processing


def test_probability_to_mask_truncates_then_resizes_with_pil():
    # ToPILImage truncates: 0.999 * 255 = 254.7 -> 254 (rounding would give 255)
    assert probability_to_mask(torch.tensor([[0.999, 0.5]]), (1, 2)).tolist() == [[254, 127]]
    # PIL's bilinear antialiases when shrinking: [0, 0, 255, 255] -> 2 pixels; each output's triangle filter
    # spans 2 input pixels either side: (0.75 * 0 + 0.75 * 0 + 0.25 * 255) / 1.75 = 36.4 -> 36, and 219
    # (plain bilinear sampling would give 0 and 255)
    prob = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert probability_to_mask(prob, (1, 2)).tolist() == [[36, 219]]


def test_inputs_are_resized_as_8_bit_values_with_aligned_corners():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 255
    x = resize_image(image, (2, 3))
    # corners kept; the middle 127.5 is resized in 8 bits (the original interpolates its uint8 arrays), so every
    # value is a whole grey level
    assert (x[0] * 255).tolist() == [[0, 128, 255], [0, 128, 255]]
    assert torch.equal(gray_to_tensor(image[..., 0], (2, 3))[0] * 255, x[0] * 255)


# ---------------------------------------------------------------------------------------------- the API


def test_predict_and_cutout(predictor):
    image = _image()
    mask = predictor.predict_mask(image)
    assert mask.shape == (90, 140) and mask.dtype == np.uint8
    prob = predictor.predict(image)
    assert prob.dtype == np.float32 and np.array_equal(prob, mask / np.float32(255))
    plain = predictor.cutout(image, refine=False)
    assert plain.shape == (90, 140, 4) and np.array_equal(plain[..., :3], image) and np.array_equal(plain[..., 3], mask)
    rgba = predictor.cutout(image)  # foreground colours estimated where the mask is soft; the photo where it is 255
    assert np.array_equal(rgba[..., 3], mask) and np.array_equal(rgba[mask == 255, :3], image[mask == 255])
    assert np.array_equal(rgba[..., :3], refine_foreground(image, mask))


def test_given_depth_and_batches(predictor):
    image = _image()
    depth = np.linspace(0, 1, 90 * 140, dtype=np.float32).reshape(90, 140)
    # a float map is quantised as a stored map would be: the same mask as its 8-bit version
    stored = np.rint(depth * 255).astype(np.uint8)
    assert np.array_equal(predictor.predict_mask(image, depth), predictor.predict_mask(image, stored))
    batch = predictor.predict_masks([image, image[:60]], [stored, None])
    assert np.abs(batch[0].astype(int) - predictor.predict_mask(image, stored)).max() <= 1  # batched GEMM rounding
    assert batch[1].shape == (60, 140)


@pytest.mark.parametrize(
    "image, depth, message",
    [
        (_image().astype(np.float32) / 255, None, "uint8 RGB"),
        (_image()[..., 0], None, r"\(H, W, 3\) uint8"),
        ("photo.jpg", None, "numpy array"),
        (_image(), np.zeros((90, 140), np.uint16), "uint8 .* or float"),
        (_image(), np.full((90, 140), 2.0, np.float32), r"not within \[0, 1\]"),
        (_image(), np.zeros((45, 70), np.uint8), "45x70 but the image is 90x140"),
    ],
)
def test_bad_api_inputs_are_named(predictor, image, depth, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(image, depth)


@pytest.mark.skipif(not runtime.cpu_bf16_supported(), reason="this CPU has no bfloat16 instructions")
def test_cpu_bf16_mode_agrees_with_fp32(tiny_official_checkpoint):
    """The CPU bf16 mode (bf16 weights, no autocast) stays within the GPUs' bound of fp32."""
    image, depth = _image(200, 260, seed=3), _image(200, 260, seed=4)[..., 0]
    probs = {}
    for precision in ("fp32", "bf16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the note on CPUs where bf16 is no faster
            p = Predictor.from_checkpoint(
                tiny_official_checkpoint, device="cpu", depth_model=None, input_size=256, precision=precision
            )
        assert p.precision == precision
        probs[precision] = p.predict(image, depth)
    assert next(p.model.parameters()).dtype == torch.bfloat16
    assert probs["bf16"].dtype == np.float32 and probs["bf16"].shape == (200, 260)
    diff = np.abs(probs["bf16"] - probs["fp32"])
    assert 0 < diff.mean() < 2e-3


@pytest.mark.parametrize(
    "asked, supported, faster, runs, note",
    [
        ("bf16", True, True, "bf16", None),
        ("bf16", True, False, "bf16", "no faster than fp32"),
        ("bf16", False, False, "fp32", "no bfloat16 instructions"),
        ("fp16", True, True, "fp32", "emulated"),
        ("fp32", False, False, "fp32", None),
    ],
)
def test_cpu_precision_choice_is_explained(monkeypatch, asked, supported, faster, runs, note):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: supported)
    monkeypatch.setattr(runtime, "cpu_bf16_faster", lambda: faster)
    precision, why = runtime.effective_precision("cpu", asked)
    assert precision == runs
    assert (why is None) if note is None else (note in why)
    assert runtime.effective_precision("cuda", asked) == (asked, None)


def test_tta_is_the_authors_six_passes(tiny_official_checkpoint):
    tta = Predictor.from_checkpoint(tiny_official_checkpoint, device="cpu", depth_model=None, input_size=1024, tta=True)
    torch.manual_seed(0)
    x, d = torch.randn(1, 3, 1024, 1024), torch.rand(1, 1, 1024, 1024)
    expected = []
    with torch.no_grad():
        for flip in (False, True):  # ttach: HorizontalFlip x Scale([0.75, 1, 1.25], bilinear, corners not aligned)
            xf, df = (x.flip(-1), d.flip(-1)) if flip else (x, d)
            for side in (768, 1024, 1280):
                xs = F.interpolate(xf, size=(side, side), mode="bilinear", align_corners=False)
                ds = F.interpolate(df, size=(side, side), mode="bilinear", align_corners=False)
                out = tta.model(xs, ds).logits[0]
                out = F.interpolate(out, size=(1024, 1024), mode="bilinear", align_corners=False)
                expected.append(out.flip(-1) if flip else out)
        got = tta.logits(x, d)
    torch.testing.assert_close(got, torch.stack(expected).mean(0), atol=0, rtol=0)
    assert not torch.allclose(got, expected[1], atol=1e-4)  # the average is not just the plain pass


def test_from_pretrained_names(monkeypatch, tiny_official_checkpoint, tiny_depth_model):
    calls = []
    import huggingface_hub

    from pdfnet import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo_id, filename: calls.append((repo_id, filename)) or tiny_official_checkpoint,
    )
    pred = Predictor.from_pretrained(device="cpu", depth_model=tiny_depth_model, input_size=256)
    Predictor.from_pretrained("general", device="cpu", depth_model=None, input_size=256)
    assert calls == [("Tennineee/PDFNet", "PDFNet_Best.pth"), ("Tennineee/PDFNet-General", "PDF-Generally.pth")]
    assert pred.model.variant == "release" and pred.model.depth_decoder is None
    with pytest.raises(CheckpointError, match="unknown published weights 'huge'"):
        Predictor.from_pretrained("huge")


def test_offline_without_weights_is_explained(monkeypatch, tmp_path, capsys):
    import huggingface_hub

    from pdfnet import hub

    def offline(repo_id, filename):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # reachable, but the download fails
    with pytest.raises(CheckpointError, match="couldn't connect.*--weights checkpoints/PDFNet_Best.pth"):
        predictor_module.download_weights()
    assert main(["predict", "--out", str(tmp_path), "--weights", "general"]) == 1
    err = capsys.readouterr().err
    assert "Tennineee/PDFNet-General" in err and "PDF-Generally.pth" in err and "Traceback" not in err


def test_general_weights_offline_end_in_one_line(tmp_path):
    # truly offline, with an empty Hugging Face cache: the authors' General model cannot be fetched
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "pdfnet", "predict", "--weights", "general", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Tennineee/PDFNet-General" in line and "PDF-Generally.pth" in line
    assert "hf download Tennineee/PDFNet-General" in line and "--weights checkpoints/PDF-Generally.pth" in line
    assert not (tmp_path / "out").exists()  # no empty output folder either


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_errors_come_at_once(tmp_path, offline):
    # without the files in the cache: the error at once, with no retries of the Hub client before it (which took
    # 30 s), whether the machine is marked offline or the Hub just cannot be reached (a closed port here)
    import time

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    for extra, culprit in [([], "Tennineee/PDFNet"), (["--weights", str(tmp_path / "w.pth")], "Depth-Anything-V2")]:
        if extra:
            torch.save({"model": {}}, tmp_path / "w.pth")
        command = [sys.executable, "-m", "pdfnet", "predict", "--out", str(tmp_path / "out"), *extra]
        began = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        elapsed = time.monotonic() - began
        assert result.returncode == 1 and culprit in result.stderr and "hf download" in result.stderr
        assert "Retry" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert elapsed < 20, elapsed  # about 2 s of CPU (importing torch); the old retries alone took 30 s
        assert not (tmp_path / "out").exists()


def test_the_hub_is_asked_only_when_it_can_answer(monkeypatch):
    from pdfnet import hub

    hub.hub_reachable.cache_clear()
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: False)
    monkeypatch.setattr(hub, "cached_file", lambda repo, name: "/cache/" + name if repo == "cached/repo" else None)
    assert hub.fetch_file("cached/repo", "w.pth") == "/cache/w.pth"  # from the cache, the Hub never asked
    assert hub.local_files_only("cached/repo") is True  # transformers told not to ask the Hub first
    with pytest.raises(OSError, match="cannot be reached"):
        hub.fetch_file("other/repo", "w.pth")
    hub.hub_reachable.cache_clear()
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: True)
    assert hub.local_files_only("other/repo") is False
    hub.hub_reachable.cache_clear()


# ----------------------------------------------------------------------------------------------- the CLI


def _cli(args: list[str], checkpoint: str, depth_model: str | None = None) -> int:
    extra = ["--weights", checkpoint, "--input-size", "256", "--device", "cpu"]
    extra += ["--depth-model", depth_model] if depth_model else []
    return main(["predict", *args, *extra])


def _mixed_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 90, 4), dtype=np.uint8), mode="RGBA").save(folder / "with_alpha.png")
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(folder / "anim.gif")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.zeros((3, 500, 3), np.uint8)).save(folder / "sliver.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / ".hidden.png.abc.tmp").write_bytes(b"a killed run's temporary")
    return {"photo": (70, 100), "grey": (64, 48), "with_alpha": (40, 90), "anim": (30, 20), "dot": (1, 1)}


def test_cli_mixed_inputs_and_rerun(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    sizes = _mixed_inputs(tmp_path / "in")
    out = tmp_path / "out"
    status = _cli(
        [str(tmp_path / "in"), "--out", str(out), "--batch-size", "2"], tiny_official_checkpoint, tiny_depth_model
    )
    assert status == 1  # two inputs failed, the rest were written
    captured = capsys.readouterr()
    assert "corrupt.png" in captured.err and "sliver.png" in captured.err and "too elongated" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(f"{s}.png" for s in sizes)
    for stem, (H, W) in sizes.items():
        result = Image.open(out / f"{stem}.png")
        assert result.mode == "RGBA" and result.size == (W, H)
    # a rerun skips what exists (an interrupted run continues); --overwrite redoes it
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert (
        _cli([str(tmp_path / "in" / "photo.jpg"), "--out", str(out)], tiny_official_checkpoint, tiny_depth_model) == 0
    )
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert (
        _cli(
            [str(tmp_path / "in" / "photo.jpg"), "--out", str(out), "--overwrite"],
            tiny_official_checkpoint,
            tiny_depth_model,
        )
        == 0
    )
    assert (out / "photo.png").stat().st_mtime_ns != stamps[out / "photo.png"]


def test_cli_never_replaces_inputs(tiny_official_checkpoint, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        Image.fromarray(_image(30, 40)).save(tmp_path / folder / "x.png")
    before = (tmp_path / "a" / "x.png").read_bytes()
    assert _cli([str(tmp_path / "a"), "--out", str(tmp_path / "a")], tiny_official_checkpoint) == 1
    assert "folder of inputs" in capsys.readouterr().err
    assert (tmp_path / "a" / "x.png").read_bytes() == before
    # two inputs with one name: stopped before any work, naming both
    assert _cli([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")], tiny_official_checkpoint) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "a" / "x.png") in err and str(tmp_path / "b" / "x.png") in err
    assert not any((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--input-size", "300"], "--input-size"),
        (["--format", "jpeg"], "--format"),
    ],
)
def test_cli_bad_flags_are_usage_errors(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pdfnet", "predict", "--out", str(tmp_path), *args], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_cli_bad_locations_fail_before_any_work(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    Image.fromarray(_image(30, 40)).save(tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    assert _cli([str(tmp_path / "empty")], tiny_official_checkpoint) == 1
    assert "no images or videos in" in capsys.readouterr().err
    assert _cli([str(tmp_path / "nothing*.png")], tiny_official_checkpoint) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    assert _cli([str(tmp_path / "x.png"), "--out", str(tmp_path / "file")], tiny_official_checkpoint) == 1
    assert "not a folder" in capsys.readouterr().err
    for bad in (tmp_path / "empty.pth", tmp_path / "random.pth", tmp_path / "missing.pth"):
        if bad.name != "missing.pth":
            bad.write_bytes(b"" if bad.name == "empty.pth" else np.random.default_rng(1).bytes(512))
        assert _cli([str(tmp_path / "x.png"), "--out", str(tmp_path / "o")], str(bad), tiny_depth_model) == 1
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err and "weights_only" not in err


def test_cli_masks_from_given_depth(tiny_official_checkpoint, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.jpg")
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "in" / "b.jpg")
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8), (30, 1))).save(tmp_path / "depth" / "a.png")
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "depth" / "b.png")  # the wrong size
    args = [str(tmp_path / "in" / "*.jpg"), "--out", str(tmp_path / "out"), "--format", "both"]
    assert _cli(args + ["--depth", str(tmp_path / "depth")], tiny_official_checkpoint) == 1
    assert "b.png is 10x10 but" in capsys.readouterr().err
    mask = Image.open(tmp_path / "out" / "a_mask.png")
    assert mask.mode == "L" and mask.size == (40, 30)
    assert Image.open(tmp_path / "out" / "a_rgba.png").mode == "RGBA"
    assert not (tmp_path / "out" / "b_mask.png").exists()


def test_cli_cutouts_refine_colours_unless_told_not_to(tiny_official_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "depth").mkdir()
    image = _image(30, 40)
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))).save(tmp_path / "depth" / "a.png")
    common = [str(tmp_path / "in" / "a.png"), "--depth", str(tmp_path / "depth"), "--format", "both"]
    assert _cli(common + ["--out", str(tmp_path / "refined")], tiny_official_checkpoint) == 0
    assert _cli(common + ["--out", str(tmp_path / "plain"), "--no-refine"], tiny_official_checkpoint) == 0
    mask = np.asarray(Image.open(tmp_path / "refined" / "a_mask.png"))
    refined, plain = (np.asarray(Image.open(tmp_path / run / "a_rgba.png")) for run in ("refined", "plain"))
    assert np.array_equal(refined[..., 3], mask) and np.array_equal(plain[..., 3], mask)
    assert np.array_equal(refined[..., :3], refine_foreground(image, mask)) and np.array_equal(plain[..., :3], image)
    assert not np.array_equal(refined[..., :3], image)


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


def test_a_rerun_redoes_only_what_other_options_made(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    from pdfnet.provenance import read_options

    Image.fromarray(_image(40, 60)).save(tmp_path / "x.png")
    Image.fromarray(_image(50, 30, seed=1)).save(tmp_path / "y.png")
    out, x, y = tmp_path / "o", str(tmp_path / "x.png"), str(tmp_path / "y.png")
    assert _cli([x, "--out", str(out), "--format", "mask"], tiny_official_checkpoint, tiny_depth_model) == 0
    assert read_options(out / "x.png")["output"] == "mask"
    capsys.readouterr()
    # the same name, other options: kept, and said so in one line for the folder; the new input is done
    assert _cli([x, y, "--out", str(out), "--format", "rgba"], tiny_official_checkpoint, tiny_depth_model) == 0
    captured = capsys.readouterr()
    [note] = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert "1 output was made with other options: output=mask (now rgba)" in note and "--overwrite" in note
    assert Image.open(out / "x.png").mode == "L" and Image.open(out / "y.png").mode == "RGBA"
    assert "wrote 1 result(s)" in captured.out
    # every option that changes a mask is compared: test-time augmentation, the precision, the weights' content
    for extra in (["--tta"], ["--precision", "bf16"], ["--no-refine"]):
        args = [x, "--out", str(out), "--format", "mask", *extra]
        assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
        err = capsys.readouterr().err
        assert ("note:" in err) == (extra != ["--no-refine"]), (extra, err)  # refining changes RGBA only
    retrained = tmp_path / "retrained.pth"
    model = torch.load(tiny_official_checkpoint, weights_only=True)
    retrained_state = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.items()}
    torch.save(retrained_state, retrained)
    assert _cli([x, "--out", str(out), "--format", "mask"], str(retrained), tiny_depth_model) == 0
    assert "weights=PDFNet_tiny.pth sha256:" in capsys.readouterr().err
    # --overwrite redoes it with this run's options, which the file then records
    assert _cli([x, "--out", str(out), "--overwrite"], tiny_official_checkpoint, tiny_depth_model) == 0
    assert Image.open(out / "x.png").mode == "RGBA" and read_options(out / "x.png")["output"] == "rgba"
    capsys.readouterr()
    assert _cli([x, y, "--out", str(out)], tiny_official_checkpoint, tiny_depth_model) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_outputs_of_an_earlier_version_are_kept_and_named(tiny_official_checkpoint, tmp_path, capsys):
    Image.fromarray(_image(40, 60)).save(tmp_path / "x.png")
    (tmp_path / "o").mkdir()
    Image.fromarray(_image(40, 60)).save(tmp_path / "o" / "x.png")  # no record of what made it
    assert _cli([str(tmp_path / "x.png"), "--out", str(tmp_path / "o")], tiny_official_checkpoint) == 0
    captured = capsys.readouterr()
    assert "1 output holds no record" in captured.err and "nothing to do" in captured.out


def test_failed_runs_leave_no_folders(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "new" / "deeper"
    assert _cli([str(tmp_path / "bad.png"), "--out", str(out)], tiny_official_checkpoint, tiny_depth_model) == 1
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # created for the run's lock, removed with it: nothing was written
    Image.fromarray(_image(40, 60)).save(tmp_path / "x.png")
    assert _cli([str(tmp_path / "x.png"), "--out", str(out)], str(tmp_path / "missing.pth"), tiny_depth_model) == 1
    assert "missing.pth" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
