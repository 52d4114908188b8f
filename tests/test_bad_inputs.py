"""A user's mistakes end in one line naming the culprit, never a traceback, and never cost finished work."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_FOLDERS, make_toy_dis5k
from PIL import Image

from pdfnet import CheckpointError, load_pdfnet
from pdfnet.errors import ImageReadError
from pdfnet.io import read_image

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Stands for a pickled object that would run code when loaded."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, tiny_official_checkpoint) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    good = Path(tiny_official_checkpoint).read_bytes()
    files = {
        "empty": b"",
        "truncated": good[: len(good) // 3],
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pth"
        paths[name].write_bytes(data)
    paths["foreign"] = folder / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, paths["foreign"])
    paths["pickle"] = folder / "pickle.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": Payload()}, paths["pickle"])
    return paths


def _one_line_error(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert "this ran while loading" not in result.stdout + result.stderr  # nothing was executed
    for name in names:
        assert name in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "foreign", "pickle"])
def test_api_raises_one_error_type(bad_checkpoints, kind):
    with pytest.raises(CheckpointError, match=str(bad_checkpoints[kind])):
        load_pdfnet(bad_checkpoints[kind])


def test_any_damaged_bytes_give_one_error_type(tmp_path, recwarn):
    # random bytes, alone or behind a pickle or zip header, reach the unpickler's every corner (IndexError,
    # struct.error, odd protocols); each must end in a CheckpointError naming the file, silently
    from pdfnet.model.state_dict import read_weights

    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.pth"
    for i in range(600):
        body = rng.integers(0, 256, int(rng.choice([1, 2, 8, 64, 512])), dtype=np.uint8).tobytes()
        path.write_bytes((b"", b"\x80\x02", b"PK\x03\x04")[i % 3] + body)
        with pytest.raises(CheckpointError, match="damaged.pth"):
            read_weights(path)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_every_command_names_a_bad_checkpoint(bad_checkpoints, tmp_path, tiny_depth_model):
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR", "DIS-VD"), n=1, depths=DEPTH_FOLDERS)
    tiny = ROOT / "configs" / "tiny.yaml"
    for kind in ("truncated", "pickle"):
        bad = str(bad_checkpoints[kind])
        test = [sys.executable, str(ROOT / "test.py"), "--checkpoint", bad, "--data-root", str(root)]
        _one_line_error(
            subprocess.run(test + ["--splits", "DIS-VD", "--out", str(tmp_path / "t")], capture_output=True, text=True),
            bad,
        )
        train = [sys.executable, str(ROOT / "train.py"), "--config", str(tiny), f"data.root={root}"]
        for setting in (f"train.init_from={bad}", f"train.pretrained_backbone={bad}"):
            result = subprocess.run(train + [f"output_dir={tmp_path / kind}", setting], capture_output=True, text=True)
            _one_line_error(result, bad)
        result = subprocess.run(
            train + [f"output_dir={tmp_path / 'r'}", "--resume", bad], capture_output=True, text=True
        )
        _one_line_error(result, bad)


def test_decompression_bombs_are_named(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 pixels is then a "bomb" (over twice the limit)
    with pytest.raises(ImageReadError, match="big.png"):
        read_image(tmp_path / "big.png")


def test_outputs_are_checked_before_the_work(tmp_path):
    (tmp_path / "preds").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "preds" / "a.png")
    (tmp_path / "file").write_text("a file, not a folder")
    command = [sys.executable, str(ROOT / "metric_tools" / "evaluate.py"), "--pred", str(tmp_path / "preds")]
    command += ["--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "file" / "out.json"), "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True)
    _one_line_error(result, "file")
    assert "score" not in result.stderr  # failed before scoring anything


@pytest.mark.parametrize("flag", [["--batch-size", "0"], ["--input-size", "100"], ["--workers", "-1"]])
def test_test_py_refuses_bad_numbers(flag, tmp_path):
    command = [sys.executable, str(ROOT / "test.py"), "--checkpoint", "x.pth", "--data-root", str(tmp_path)]
    result = subprocess.run(command + ["--out", str(tmp_path / "o"), *flag], capture_output=True, text=True)
    assert result.returncode == 2 and flag[0] in result.stderr and "Traceback" not in result.stderr
