"""A user's mistakes end in one line naming the culprit, never a traceback, and never cost finished work."""

import re
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


@pytest.fixture(scope="module")
def wrong_files(tmp_path_factory, tiny_depth_model, tiny_official_checkpoint) -> dict[str, Path]:
    """Files people pass as weights by mistake, each of another kind than a checkpoint."""
    import shutil
    import zipfile

    folder = tmp_path_factory.mktemp("wrong")
    files = {name: folder / name for name in ("config.json", "train.yaml", "photo.png", "photo.jpg", "weights.zip")}
    files["config.json"].write_text('{"model_type": "depth_anything", "hidden_size": 32}\n')
    files["train.yaml"].write_text("train:\n  epochs: 3\ndata:\n  root: data/DIS5K\n")
    for name in ("photo.png", "photo.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files[name])
    with zipfile.ZipFile(files["weights.zip"], "w") as archive:
        archive.write(tiny_official_checkpoint, "PDFNet_tiny.pth")
    files["depth.safetensors"] = folder / "depth.safetensors"  # another model's weights
    shutil.copy(Path(tiny_depth_model) / "model.safetensors", files["depth.safetensors"])
    files["graph.onnx"] = folder / "graph.onnx"
    _tiny_onnx_graph(files["graph.onnx"])
    return files


def _tiny_onnx_graph(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", value, [value[0]])
    graph.output[0].name = "y"
    onnx.save(helper.make_model(graph, producer_name="pytorch"), path)


@pytest.mark.parametrize(
    "name, said",
    [
        ("config.json", "is a JSON file, not a checkpoint"),
        ("train.yaml", "is a YAML file, not a checkpoint (a training config? pass it as train.py --config)"),
        ("photo.png", "is a PNG image, not a checkpoint"),
        ("photo.jpg", "is a JPEG image, not a checkpoint"),
        ("weights.zip", "is a zip archive, not a checkpoint (unpack it first"),
        ("depth.safetensors", "holds a depth model's weights"),
        ("graph.onnx", "is an ONNX graph, not a checkpoint"),
    ],
)
def test_wrong_files_are_named_for_what_they_are(wrong_files, name, said):
    with pytest.raises(CheckpointError, match=re.escape(said)) as raised:
        load_pdfnet(wrong_files[name])
    assert str(wrong_files[name]) in str(raised.value)


def test_wrong_files_through_the_commands(wrong_files, tiny_official_checkpoint, tiny_depth_model, tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    predict = [sys.executable, "-m", "pdfnet", "predict", str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
    predict += ["--depth-model", tiny_depth_model, "--device", "cpu"]
    # a checkpoint where an ONNX graph is expected, and the reverse
    renamed = tmp_path / "model.onnx"
    renamed.write_bytes(Path(tiny_official_checkpoint).read_bytes())
    result = subprocess.run(predict + ["--weights", str(renamed)], capture_output=True, text=True)
    _one_line_error(result, "model.onnx is a PyTorch checkpoint, not an ONNX graph")
    result = subprocess.run(predict + ["--weights", str(wrong_files["config.json"])], capture_output=True, text=True)
    _one_line_error(result, "config.json is a JSON file, not a checkpoint")
    convert = [
        sys.executable,
        "-m",
        "pdfnet",
        "convert",
        str(wrong_files["graph.onnx"]),
        "--out",
        str(tmp_path / "c.safetensors"),
    ]
    _one_line_error(subprocess.run(convert, capture_output=True, text=True), "graph.onnx is an ONNX graph")
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-VD",), n=1, depths=("depth_large",))
    test = [sys.executable, "-m", "pdfnet", "test", "--checkpoint", str(wrong_files["photo.png"]), "--data-root"]
    result = subprocess.run(
        test + [str(root), "--splits", "DIS-VD", "--out", str(tmp_path / "t")], capture_output=True, text=True
    )
    _one_line_error(result, "photo.png is a PNG image, not a checkpoint")
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()


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
