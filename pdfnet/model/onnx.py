"""PDFNet and Depth-Anything-V2 as ONNX graphs, and running them through ONNX Runtime.

The network is exported with every fast path off (the plain computation, see :mod:`pdfnet.model.fastpath`) by
PyTorch's ``torch.export``-based exporter: inputs ``image`` (B, 3, S, S) ImageNet-normalised float32 and
``depth`` (B, 1, S, S) in [0, 1], output ``mask`` (B, 1, S, S), the foreground probability. The batch is
dynamic; the side S is fixed at export (the Swin window layout is computed from the map sizes in Python, so a
graph holds one size). The depth model takes ``pixel_values`` (B, 3, h, w), h and w multiples of 14 (dynamic),
and gives ``predicted_depth`` (B, h, w).

ONNX Runtime is an optional dependency: ``pip install "pdfnet[onnx]"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, PDFNetError, first_line
from .fastpath import fastpath
from .network import PDFNet
from .state_dict import file_kind, with_article

OPSET = 18


class OnnxError(PDFNetError, RuntimeError):
    """ONNX export or ONNX Runtime is unavailable or failed; the message says what to install or pass."""


class _Probability(nn.Module):
    """The graph's function: image and depth to the full-resolution probability."""

    def __init__(self, model: PDFNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.model(image, depth).logits[0].sigmoid()


EXPORTER_TORCH = (2, 6)  # torch.onnx.export's torch.export-based exporter with these options


def exporter_available() -> bool:
    """Whether this PyTorch has the exporter and the onnx and onnxscript packages are installed."""
    try:
        _needs_exporter()
        return True
    except OnnxError:
        return False


def _needs_exporter() -> None:
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < EXPORTER_TORCH:
        raise OnnxError(
            f"exporting to ONNX needs PyTorch {'.'.join(map(str, EXPORTER_TORCH))} or newer (this is "
            f"{torch.__version__})"
        )
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise OnnxError('exporting to ONNX needs onnx and onnxscript: pip install "pdfnet[onnx]"') from None


def export_network(model: PDFNet, path: str | os.PathLike, input_size: int = 1024, optimize: bool = True) -> Path:
    """Write ``model`` (eval mode, float32) as an ONNX graph at ``path`` for S = ``input_size``.

    Args:
        optimize: let the exporter fold constants and simplify (smaller, faster graphs; slower export).
    """
    _needs_exporter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if input_size % model.min_size:
        raise OnnxError(f"the input size must be a multiple of {model.min_size}, got {input_size}")
    if not model.use_depth:
        raise OnnxError(
            "an RGB-only PDFNet (model.use_depth=false) is not exported: the graph's inputs are image and depth"
        )
    model = model.float().eval()
    model.depth_decoder = None
    image, depth = torch.randn(2, 3, input_size, input_size), torch.rand(2, 1, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), fastpath(False):
        torch.onnx.export(
            _Probability(model).eval(),
            (image, depth),
            str(path),
            input_names=["image", "depth"],
            output_names=["mask"],
            dynamic_shapes={"image": {0: batch}, "depth": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            optimize=optimize,
            external_data=True,
        )
    return path


def _head_without_int_casts(head: nn.Module):
    """transformers' Depth-Anything head computes its output size with ``int()``, which fixes that size in an
    exported graph while the input stays dynamic; this is the same computation with the sizes left symbolic
    (conv1, bilinear upsampling to 14 x the patch grid with aligned corners, conv2, activation, conv3,
    activation, times max_depth). None when the head is not laid out as expected."""
    needed = ("conv1", "conv2", "conv3", "activation1", "activation2", "patch_size", "max_depth", "head_in_index")
    if not all(hasattr(head, name) for name in needed):
        return None

    def forward(hidden_states, patch_height, patch_width):
        x = head.conv1(hidden_states[head.head_in_index])
        size = (patch_height * head.patch_size, patch_width * head.patch_size)
        x = nn.functional.interpolate(x, size, mode="bilinear", align_corners=True)
        x = head.activation2(head.conv3(head.activation1(head.conv2(x)))) * head.max_depth
        return x.squeeze(dim=1)

    return forward


class _DepthLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).predicted_depth


def export_depth_model(model: nn.Module, path: str | os.PathLike, optimize: bool = True) -> Path:
    """Write a transformers Depth-Anything model as an ONNX graph: ``pixel_values`` (B, 3, h, w) with h and w
    multiples of 14 (dynamic) -> ``predicted_depth`` (B, h, w)."""
    _needs_exporter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    example = torch.randn(2, 3, 518, 686)  # a batch of 1 would specialise the batch dimension
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows, cols = torch.export.Dim("rows", min=1, max=512), torch.export.Dim("cols", min=1, max=512)
    head = getattr(model, "head", None)
    traceable = _head_without_int_casts(head) if head is not None else None
    if traceable is not None:
        head.forward = traceable  # for the export only (an instance attribute, removed below)
    try:
        _export_depth(model, path, example, batch, rows, cols, optimize)
    finally:
        if traceable is not None:
            del head.forward
    return path


def _export_depth(model, path, example, batch, rows, cols, optimize) -> None:
    with torch.no_grad():
        torch.onnx.export(
            _DepthLogits(model).eval(),
            (example,),
            str(path),
            input_names=["pixel_values"],
            output_names=["predicted_depth"],
            dynamic_shapes={"pixel_values": {0: batch, 2: 14 * rows, 3: 14 * cols}},
            opset_version=OPSET,
            dynamo=True,
            optimize=optimize,
            external_data=True,
        )


def _session(path: str | os.PathLike, providers: list[str] | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxError(f'running {path} needs ONNX Runtime: pip install "pdfnet[onnx]"') from None
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"no ONNX graph at {name}")
    kind = file_kind(name)
    if kind is not None and kind != "ONNX graph":
        advice = {
            "PyTorch checkpoint": "pass it under its own name (.pth, .pt), or make a graph of it with pdfnet export",
            "safetensors file": "pass it under its own name (.safetensors), or make a graph of it with pdfnet export",
        }.get(kind, "pdfnet export writes the graphs predict runs")
        raise CheckpointError(f"{name} is {with_article(kind)}, not an ONNX graph ({advice})")
    available = ort.get_available_providers()
    # under torchrun each process takes GPU LOCAL_RANK, as the PyTorch path does (pdfnet.distributed)
    cuda = ("CUDAExecutionProvider", {"device_id": int(os.environ.get("LOCAL_RANK", "0"))})
    wanted = providers or [cuda, "CPUExecutionProvider"]
    chosen = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available]
    try:
        return ort.InferenceSession(name, providers=chosen or ["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own types for a damaged or foreign file
        first = first_line(e)
        raise CheckpointError(f"{name} cannot be loaded by ONNX Runtime ({first})") from None


class OnnxNetwork:
    """A PDFNet ONNX graph run by ONNX Runtime: ``(image, depth) -> probability``, as numpy or torch tensors.

    Attributes:
        input_size: the side S the graph was exported for.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        self.path = Path(path)
        self.session = _session(path, providers)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["image", "depth"]:
            raise CheckpointError(f"{path} is not a PDFNet ONNX graph (inputs {names}; expected image, depth)")
        side = self.session.get_inputs()[0].shape[-1]
        if not isinstance(side, int):
            raise CheckpointError(f"{path} has no fixed input size")
        self.input_size = side

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), (B, 1, S, S) -> (B, 1, S, S) float32 probability."""
        feeds = {"image": _numpy(image), "depth": _numpy(depth)}
        return torch.from_numpy(self.session.run(["mask"], feeds)[0])


class OnnxDepthModel:
    """A Depth-Anything ONNX graph, called like the transformers model it was exported from."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        self.path = Path(path)
        self.session = _session(path, providers)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["pixel_values"]:
            raise CheckpointError(f"{path} is not a depth-model ONNX graph (inputs {names})")

    def __call__(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        out = self.session.run(["predicted_depth"], {"pixel_values": _numpy(pixel_values)})[0]
        return SimpleNamespace(predicted_depth=torch.from_numpy(out))

    def to(self, *args, **kwargs) -> OnnxDepthModel:  # the torch model's interface; runs where ORT runs
        return self

    def eval(self) -> OnnxDepthModel:
        return self


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
