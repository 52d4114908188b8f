"""How sure a mask is: the spread of the six test-time passes (stand-in networks with known passes, and the tiny
model), the boundary band and the scores, ``predict --uncertainty`` on images and videos, ``--input-size auto``
and ``--output-processing-res``."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pdfnet.cli import main
from pdfnet.errors import InputError
from pdfnet.inference.predictor import Predictor, parse_input_size
from pdfnet.inference.uncertainty import (
    SCORES_KEY,
    UncertaintyScores,
    boundary_band,
    csv_text,
    read_scores,
    score,
)
from pdfnet.provenance import read_options


class StandIn(torch.nn.Module):
    """A network whose logits follow a fixed rule of the input's shape: ``rule(x, y)`` of the pixel centres'
    coordinates in [-1, 1] (x across, y down), whatever the size it is run at."""

    min_size = 256
    variant = "stand-in"

    def __init__(self, rule) -> None:
        super().__init__()
        self.rule = rule
        self.depth_decoder = None

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> SimpleNamespace:
        B, _, H, W = image.shape
        y = torch.linspace(-1, 1, H).view(H, 1).expand(H, W)
        x = torch.linspace(-1, 1, W).view(1, W).expand(H, W)
        return SimpleNamespace(logits=[self.rule(x, y).expand(B, 1, H, W).float()])


def _disc(x, y):
    # a centred disc: the same under a horizontal flip, and at every scale (the rule is of relative coordinates)
    return 12.0 * (0.5 - torch.sqrt(x**2 + y**2))


def _tilted_disc(x, y):
    # plus a ramp across: a horizontal flip turns it around, so flipped and unflipped passes disagree
    return _disc(x, y) + 4.0 * x


def _stand_in(rule, size: int = 1024) -> Predictor:
    return Predictor(StandIn(rule), None, device="cpu", input_size=size, tta=True)


def _photo(h=90, w=140, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_passes_that_agree_give_zero_uncertainty():
    # at 1024 the six passes run at 768, 1024 and 1280 pixels, flipped and not: a rule that ignores flips and
    # scales gives six passes equal up to resampling rounding (below half a level of 255)
    predictor = _stand_in(_disc)
    image, depth = _photo(300, 400), np.zeros((300, 400), np.uint8)
    probability, uncertainty = predictor.predict(image, depth, return_uncertainty=True)
    assert uncertainty.map.shape == (300, 400) and uncertainty.map.dtype == np.uint8
    assert uncertainty.map.max() == 0 and uncertainty.boundary == 0.0 and uncertainty.overall == 0.0
    mask = predictor.predict_mask(image, depth)
    assert np.array_equal(probability, mask / np.float32(255)) and 0 < (mask >= 128).mean() < 1  # a disc


def test_passes_that_disagree_give_more_and_the_map_is_their_spread():
    predictor = _stand_in(_tilted_disc)
    S = 1024  # an image of the network's size: the map is the spread itself, not resized
    image, depth = _photo(S, S), np.zeros((S, S), np.uint8)
    [result] = predictor.predict_all([image], [depth], uncertainty=True)
    x = torch.zeros(1, 3, S, S)
    with torch.no_grad():
        passes = torch.stack(predictor.tta_passes(x, torch.zeros(1, 1, S, S))).sigmoid()[:, 0, 0]
    spread = passes.std(dim=0, correction=0)  # the population deviation of six values, in [0, 0.5]
    expected = (spread * 510).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(result.uncertainty.map, expected)
    # the ramp of +-4 logits at the sides: flipped passes disagree most there, by far more than the agreeing rule
    assert result.uncertainty.overall > 0.1 and result.uncertainty.boundary > 0.1
    agreeing = _stand_in(_disc).predict_all([image], [depth], uncertainty=True)[0].uncertainty
    assert agreeing.overall == 0.0 and result.uncertainty.boundary > agreeing.boundary
    # the mask is the one without uncertainty, bit for bit
    assert np.array_equal(result.mask, predictor.predict_masks([image], [depth])[0])


def test_the_mask_is_unchanged_by_measuring_uncertainty(tiny_official_checkpoint):
    predictor = Predictor.from_checkpoint(
        tiny_official_checkpoint, device="cpu", depth_model=None, input_size=256, tta=True
    )
    images = [_photo(70, 100), _photo(120, 60, seed=1)]
    depths = [_photo(70, 100, seed=2)[..., 0], _photo(120, 60, seed=3)[..., 0]]
    results = predictor.predict_all(images, depths, uncertainty=True)
    for result, mask, image, depth in zip(results, predictor.predict_masks(images, depths), images, depths):
        assert np.array_equal(result.mask, mask) and result.uncertainty.map.shape == image.shape[:2]
        assert np.array_equal(result.depth, depth)  # the depth map the network read
    plain = Predictor.from_checkpoint(tiny_official_checkpoint, device="cpu", depth_model=None, input_size=256)
    with pytest.raises(InputError, match="test-time augmentation"):
        plain.predict(images[0], depths[0], return_uncertainty=True)


def test_boundary_band_and_scores_by_hand():
    mask = np.zeros((100, 200), np.uint8)
    mask[30:70, 50:150] = 255  # a 40 x 100 box; k = round(0.01 * 200) = 2
    band = boundary_band(mask)
    rows, cols = np.nonzero(band)
    assert band[30:70, 50:150].sum() == 40 * 100 - 36 * 96  # inside: 2 pixels deep along every side
    # outside, 2 deep too, but of each 2 x 2 block off a corner only the diagonal neighbour (sqrt 2 away) is
    # within 2: (28, 48) is sqrt 8 away, (28, 49) and (29, 48) sqrt 5
    assert band[28:72, 48:152].sum() - band[30:70, 50:150].sum() == 44 * 104 - 40 * 100 - 4 * 3
    assert rows.min() == 28 and rows.max() == 71 and cols.min() == 48 and cols.max() == 151
    # an object touching the image's border has no edge there
    touching = np.zeros((100, 200), np.uint8)
    touching[:, :100] = 255
    assert set(np.nonzero(boundary_band(touching))[1]) == {98, 99, 100, 101}
    # scores: the map is 255 on the band and 0 elsewhere: boundary 1, overall the band's share of the image
    uncertainty = np.where(band, 255, 0).astype(np.uint8)
    s = score(mask, uncertainty)
    assert s.boundary == 1.0 and s.overall == pytest.approx(band.sum() / 20000)
    assert s.area == 4000 and s.foreground == 0.2 and (s.width, s.height) == (200, 100)
    # no edge (no object): no boundary score
    assert score(np.zeros((10, 10), np.uint8), np.full((10, 10), 51, np.uint8)).boundary is None


def test_the_csv_lists_the_least_certain_first():
    def scores(boundary, overall):
        return UncertaintyScores(boundary, overall, 10, 0.1, 10, 10)

    rows = [
        ("sure", scores(0.01, 0.001), {}),
        ("unsure", scores(0.30, 0.002), {}),
        ("no_object", scores(None, 0.0), {}),
        ("tie_b", scores(0.10, 0.05), {}),
        ("tie_a", scores(0.10, 0.05), {}),
        ("tie_more", scores(0.10, 0.06), {}),
    ]
    table = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [r["name"] for r in table] == ["no_object", "unsure", "tie_more", "tie_a", "tie_b", "sure"]
    assert [r["rank"] for r in table] == ["1", "2", "3", "4", "5", "6"] and table[0]["boundary_uncertainty"] == ""


# ------------------------------------------------------------------------------------------ input size auto


def test_auto_input_size_follows_the_longer_side():
    predictor = _stand_in(_disc, "auto")
    assert predictor.input_size == 2048 and predictor.auto_size
    side = predictor.side_for
    # nearest multiple of 256, halves up; at least 256, at most the cap
    assert [side((h, w)) for h, w in ((100, 60), (300, 500), (383, 200), (384, 200), (1000, 700), (9000, 5))] == [
        256,
        512,
        256,
        512,
        1024,
        2048,
    ]
    assert _stand_in(_disc, "auto:1024").side_for((3000, 4000)) == 1024
    # the processing resolution keeps the aspect: the longer side is the input side
    assert predictor.processing_shape((300, 500)) == (307, 512) and predictor.processing_shape((90, 140)) == (165, 256)
    for bad in ("auto:1000", "auto:x", 1000, "big"):
        with pytest.raises(InputError, match="multiple of 256"):
            parse_input_size(bad)
    # images of other sides go through the network in their own batches, and the masks keep their sizes
    images = [np.zeros((100, 60, 3), np.uint8), np.zeros((300, 500, 3), np.uint8), np.zeros((120, 80, 3), np.uint8)]
    masks = predictor.predict_masks(images, [im[..., 0] for im in images])
    assert [m.shape for m in masks] == [(100, 60), (300, 500), (120, 80)]


@pytest.mark.parametrize("value, message", [("auto:1000", "auto:N"), ("300", "or auto"), ("auto:0", "auto:N")])
def test_bad_auto_sizes_are_usage_errors(tmp_path, value, message):
    command = [sys.executable, "-m", "pdfnet", "predict", "--out", str(tmp_path), "--input-size", value]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------ pdfnet predict


def _cli(args: list[str], checkpoint: str, depth_model: str, size: str = "256") -> int:
    extra = ["--weights", checkpoint, "--depth-model", depth_model, "--input-size", size, "--device", "cpu"]
    return main(["predict", *args, *extra])


def test_predict_writes_uncertainty_maps_and_their_scores(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i, (h, w) in enumerate(((70, 100), (64, 48), (50, 90))):
        Image.fromarray(_photo(h, w, seed=i)).save(tmp_path / "in" / f"p{i}.png")
    out = tmp_path / "out"
    # without --tta there is nothing to compare: said at once, and nothing written
    assert (
        _cli([str(tmp_path / "in"), "--out", str(out), "--uncertainty"], tiny_official_checkpoint, tiny_depth_model)
        == 1
    )
    err = capsys.readouterr().err
    assert "--uncertainty needs --tta" in err and "add --tta" in err and not out.exists()
    args = [str(tmp_path / "in"), "--out", str(out), "--format", "mask", "--tta", "--uncertainty", "--batch-size", "2"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    table = list(csv.DictReader(open(out / "uncertainty.csv")))
    assert len(table) == 3
    for row in table:
        stem = row["name"]
        mask = np.asarray(Image.open(out / f"{stem}.png"))
        levels = np.asarray(Image.open(out / f"{stem}_uncertainty.png"))
        assert levels.shape == mask.shape == np.asarray(Image.open(tmp_path / "in" / f"{stem}.png")).shape[:2]
        measured = score(mask, levels)  # the scores are those of the files as written
        assert read_scores(out / f"{stem}_uncertainty.png") == measured
        assert float(row["image_uncertainty"]) == pytest.approx(measured.overall, abs=1e-6)
        assert read_options(out / f"{stem}_uncertainty.png")["output"] == "uncertainty"
        assert SCORES_KEY in Image.open(out / f"{stem}_uncertainty.png").text
    keys = [UncertaintyScores.sort_key(read_scores(out / f"{r['name']}_uncertainty.png")) for r in table]
    assert keys == sorted(keys)  # least certain first
    # the masks are those of --tta alone
    capsys.readouterr()
    args = [str(tmp_path / "in"), "--out", str(tmp_path / "plain"), "--format", "mask", "--tta"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    for i in range(3):
        assert (out / f"p{i}.png").read_bytes() == (tmp_path / "plain" / f"p{i}.png").read_bytes()
    # a rerun finds everything made alike
    capsys.readouterr()
    args = [str(tmp_path / "in"), "--out", str(out), "--format", "mask", "--tta", "--uncertainty"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_predict_at_the_processing_resolution(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    Image.fromarray(_photo(90, 140)).save(tmp_path / "x.png")
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--format", "both", "--output-processing-res"]
    assert _cli(args + ["--tta", "--uncertainty"], tiny_official_checkpoint, tiny_depth_model) == 0
    for name in ("x_mask.png", "x_rgba.png", "x_uncertainty.png"):
        assert Image.open(tmp_path / "o" / name).size == (256, 165)  # 140 -> 256, 90 * 256 / 140 = 164.6 -> 165
    assert read_options(tmp_path / "o" / "x_mask.png")["output-res"] == "processing"
    # at the input's size the record has no such key (outputs of earlier versions still count as made alike), and
    # the outputs made at the processing resolution count as made otherwise
    capsys.readouterr()
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--format", "both"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert "output-res=processing (now ?)" in capsys.readouterr().err
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "plain"), "--format", "mask"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert "output-res" not in read_options(tmp_path / "plain" / "x.png")
    # auto: a 90 x 140 photo is run at 256, recorded as auto:2048
    args = [str(tmp_path / "x.png"), "--out", str(tmp_path / "auto"), "--format", "mask"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model, size="auto") == 0
    assert read_options(tmp_path / "auto" / "x.png")["input-size"] == "auto:2048"
    assert (tmp_path / "auto" / "x.png").read_bytes() != b"" and Image.open(tmp_path / "auto" / "x.png").size == (
        140,
        90,
    )


def test_predict_video_scores_every_frame(tiny_official_checkpoint, tiny_depth_model, tmp_path, capsys):
    from test_video import make_clip

    clip = make_clip(tmp_path / "in" / "clip.mp4", frames=3)
    out = tmp_path / "out"
    args = [str(clip), "--out", str(out), "--format", "mask", "--tta", "--uncertainty", "--batch-size", "2"]
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    lines = (out / "clip_uncertainty.csv").read_text().splitlines()
    assert lines[0].startswith("# pdfnet: ") and read_options(out / "clip_uncertainty.csv")["output"] == "uncertainty"
    rows = list(csv.DictReader(lines[1:]))
    assert [r["frame"] for r in rows] == ["0", "1", "2"] and [float(r["time_s"]) for r in rows] == [0.0, 0.04, 0.08]
    assert all(0 <= float(r["image_uncertainty"]) <= 1 for r in rows)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "clip_mask.mp4",
        "clip_uncertainty.csv",
    ]
    capsys.readouterr()
    assert _cli(args, tiny_official_checkpoint, tiny_depth_model) == 0
    assert "nothing to do" in capsys.readouterr().out
