"""ONNX export: the graph ONNX Runtime runs agrees with PyTorch (narrow models), and predict runs it."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="ONNX Runtime is the optional extra pdfnet[onnx]")
pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript (pdfnet[onnx])")
if not __import__("pdfnet.model.onnx", fromlist=["x"]).exporter_available():
    pytest.skip("this PyTorch has no torch.export-based ONNX exporter (2.6 or newer)", allow_module_level=True)

from pdfnet.data.depth import DepthEstimator, load_depth_model  # noqa: E402
from pdfnet.inference.predictor import Predictor  # noqa: E402
from pdfnet.model.checkpoint import load_pdfnet  # noqa: E402
from pdfnet.model.onnx import OnnxDepthModel, OnnxNetwork, export_depth_model, export_network  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny_official_checkpoint, tiny_depth_model):
    folder = tmp_path_factory.mktemp("onnx")
    export_network(load_pdfnet(tiny_official_checkpoint), folder / "pdfnet.onnx", 256, optimize=False)
    export_depth_model(load_depth_model(tiny_depth_model), folder / "depth.onnx", optimize=False)
    return folder


def test_network_graph_agrees_with_pytorch_at_any_batch(graphs, tiny_official_checkpoint):
    model = load_pdfnet(tiny_official_checkpoint)
    network = OnnxNetwork(graphs / "pdfnet.onnx", ["CPUExecutionProvider"])
    assert network.input_size == 256
    for batch in (1, 2, 3):  # the batch is dynamic
        torch.manual_seed(batch)
        image, depth = torch.randn(batch, 3, 256, 256), torch.rand(batch, 1, 256, 256)
        with torch.no_grad():
            expected = model(image, depth).logits[0].sigmoid()
        got = network(image, depth)
        assert got.shape == (batch, 1, 256, 256)
        assert (got - expected).abs().max().item() < 1e-4


def test_depth_graph_agrees_with_transformers(graphs, tiny_depth_model):
    model = load_depth_model(tiny_depth_model)
    graph = OnnxDepthModel(graphs / "depth.onnx", ["CPUExecutionProvider"])
    for shape in ((1, 3, 518, 686), (2, 3, 518, 518)):  # sides are dynamic multiples of 14
        pixels = torch.randn(*shape)
        with torch.no_grad():
            expected = model(pixel_values=pixels).predicted_depth
        got = graph(pixel_values=pixels).predicted_depth
        assert got.shape == expected.shape and (got - expected).abs().max().item() < 1e-4
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    torch_depth = DepthEstimator(tiny_depth_model).estimate(image)
    onnx_depth = DepthEstimator(str(graphs / "depth.onnx")).estimate(image)
    assert np.abs(torch_depth - onnx_depth).max() < 1e-3


def test_predict_runs_the_graphs(graphs, tiny_official_checkpoint, tiny_depth_model, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (70, 110, 3), dtype=np.uint8)
    torch_path = Predictor.from_checkpoint(tiny_official_checkpoint, "cpu", tiny_depth_model, input_size=256)
    onnx_path = Predictor.from_onnx(graphs / "pdfnet.onnx", depth_model=str(graphs / "depth.onnx"))
    difference = np.abs(torch_path.predict_mask(image).astype(int) - onnx_path.predict_mask(image))
    assert difference.max() <= 1  # within one grey level
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    command = [sys.executable, "-m", "pdfnet", "predict", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    command += [
        "--weights",
        str(graphs / "pdfnet.onnx"),
        "--depth-model",
        str(graphs / "depth.onnx"),
        "--format",
        "mask",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.abs(written.astype(int) - torch_path.predict_mask(image)).max() <= 1
    bad = subprocess.run(command + ["--tta", "--overwrite"], capture_output=True, text=True)
    assert bad.returncode == 1 and "test-time augmentation" in bad.stderr and "Traceback" not in bad.stderr
