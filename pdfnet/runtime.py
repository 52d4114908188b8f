"""What every part of PDFNet shares about running: the ImageNet constants, the numeric precisions, autocast and
the choice of device. The one place for each; nothing here imports the rest of the package."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The largest network input side that input size "auto" chooses (a photo's longer side, rounded to a multiple of
# 256): 2048 costs 4.3x the CPU time and 2.5x the memory of 1024 (README, Large photos)
AUTO_MAX_INPUT_SIZE = 2048

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: dict[str, torch.dtype] = dict(zip(get_args(Precision), (torch.float32, torch.float16, torch.bfloat16)))


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an InputError (a ValueError) listing them."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str):
    """The context a forward pass runs in: autocast to fp16/bf16, or (fp32) autocast switched off, so that fp32
    means fp32 even inside a caller's autocast."""
    device_type = torch.device(device).type
    if check_precision(precision) == "fp32":
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=PRECISIONS[precision])


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one named, or the first CUDA GPU when there is one, else the CPU.

    Raises:
        InputError: the name is not a device, or names a CUDA device this machine does not have.
    """
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"not a device: {device!r} (expected cpu, cuda or cuda:N)") from e
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but no CUDA GPU is available; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # a build without oneDNN, or a changed private API: no native bf16
        return False


def cpu_bf16_faster() -> bool:
    """Whether bfloat16 matrix products beat float32 on this CPU: with AMX, or on AMD's Zen 4 and 5, whose
    AVX512-BF16 dot products run at twice the float32 rate. Intel's AVX512-BF16 without AMX (AMX absent, or
    hidden by a hypervisor) runs them at the float32 rate at best: measured on a Xeon (family 6, model 207) with
    AMX hidden, oneDNN's bf16 products reached 69 GFLOP/s a core against 105 for float32."""
    try:
        if torch.cpu._is_amx_tile_supported():
            return True
    except Exception:  # a changed private API: decide by the vendor alone
        pass
    try:
        with open("/proc/cpuinfo") as f:
            return "AuthenticAMD" in f.read(4096)
    except OSError:  # not Linux: no way to tell, assume the instructions pay off
        return True


def effective_precision(device: torch.device | str, precision: str) -> tuple[str, str | None]:
    """The precision that will run on ``device`` and, when it differs from the one asked for, why.

    On a CPU, bf16 runs where the CPU has bf16 instructions (with a note where they are no faster than fp32),
    fp16 never (PyTorch emulates it, slower than fp32); both fall back to fp32 otherwise.
    """
    check_precision(precision)
    if torch.device(device).type != "cpu" or precision == "fp32":
        return precision, None
    if precision == "bf16" and cpu_bf16_supported():
        if not cpu_bf16_faster():
            return "bf16", (
                "this CPU's bfloat16 instructions (AVX512-BF16 without AMX) are no faster than fp32 for matrix "
                "products; bf16 halves the memory but not the time"
            )
        return "bf16", None
    if precision == "bf16":
        return "fp32", "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); running fp32"
    return "fp32", "fp16 on a CPU is emulated and slower than fp32; running fp32 (bf16 is the CPU's fast mode)"
