"""Reading weight files safely and copying tensors between state dicts: what the checkpoint loaders, the ImageNet
backbone loader and fine-tuning share.

Loading never runs code from a file: ``torch.load(..., weights_only=True)`` refuses pickled objects other
than tensors and plain containers, and ``.safetensors`` files hold tensors only.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import CheckpointError, first_line


def _describe_refusal(error: Exception) -> str:
    """The useful part of torch's refusal of an unsafe pickle, without its advice to load unsafely."""
    text = str(error)
    found = re.search(r"(Unsupported (?:global|operand)[^\n.]*)", text)
    return found.group(1).strip() if found else "it holds Python objects other than tensors"


_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def file_kind(path: str | os.PathLike) -> str | None:
    """What a file holds, told from its first bytes (its name aside): ``PyTorch checkpoint``, ``safetensors
    file``, ``ONNX graph``, ``PNG image`` (and other images), ``zip archive``, ``JSON file``, ``YAML file``,
    ``text file``, or None when it is none of these (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    for magic, name in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            return f"{name} image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP image"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "zip archive"
        return "PyTorch checkpoint" if any(n.endswith("data.pkl") for n in names) else "zip archive"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "PyTorch checkpoint"  # the legacy format: a pickle
    if len(head) >= 10 and head[8:10] in (b'{"', b"{ ") and int.from_bytes(head[:8], "little") < 1 << 30:
        return "safetensors file"  # an 8-byte header length, then the JSON header
    if _looks_like_onnx(head):
        return "ONNX graph"
    return _text_kind(head)


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto: protobuf fields in order, ``ir_version`` (field 1, a small varint) first, then one of
    the producer, domain, version or graph fields (2 to 7)."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 20:
        return False
    return head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A)


def _text_kind(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        return "JSON file"
    if re.search(r"^[A-Za-z_][\w.-]*\s*:(\s|$)", text, re.MULTILINE):
        return "YAML file"
    return "text file"


def not_a_checkpoint(name: str, kind: str | None) -> str | None:
    """Why a file of this kind is no checkpoint (what it is and what to do with it), or None if it may be one."""
    if kind in (None, "PyTorch checkpoint", "safetensors file"):
        return None
    advice = {
        "ONNX graph": "a graph of pdfnet export runs with predict --weights (ONNX Runtime); training and "
        "testing need the checkpoint it was exported from",
        "JSON file": "a model's config.json? PDFNet's weights are a .pth, .pt or .safetensors file",
        "YAML file": "a training config? pass it as train.py --config",
        "text file": "PDFNet's weights are a .pth, .pt or .safetensors file",
        "zip archive": "unpack it first, or download the checkpoint itself",
    }.get(kind, "PDFNet's weights are a .pth, .pt or .safetensors file")
    return f"{name} is {with_article(kind)}, not a checkpoint ({advice})"


def with_article(kind: str) -> str:
    """``a PNG image``, ``an ONNX graph``: a kind of :func:`file_kind` in a sentence."""
    return f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind}"


def check_weight_file(path: str | os.PathLike) -> str | None:
    """What :func:`read_weights` checks before it reads a file: that it exists, is a file, is not empty and is
    not of a kind no checkpoint is (:func:`file_kind`, which it returns).

    Raises:
        CheckpointError: naming the file and what it is.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CheckpointError(f"no checkpoint at {name}")
    if os.path.isdir(name):
        raise CheckpointError(f"{name} is a folder, not a checkpoint file")
    if os.path.getsize(name) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes): an interrupted download or copy?")
    kind = file_kind(name)
    refusal = not_a_checkpoint(name, kind)
    if refusal is not None:
        raise CheckpointError(refusal)
    return kind


def read_weights(path: str | os.PathLike) -> Mapping:
    """What a weight file holds: a ``.safetensors`` file's tensors (with its metadata under ``__metadata__``),
    or a PyTorch file's dict, loaded without running code.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a weight file, or refused as unsafe; the
            message names the file.
    """
    name = os.fspath(path)
    kind = check_weight_file(name)
    if name.endswith(".safetensors") or kind == "safetensors file":
        return _read_safetensors(name)
    try:
        with warnings.catch_warnings():  # torch warns of the odd pickle protocols that damaged bytes declare
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) and ("Unsupported" in str(e) or "GLOBAL" in str(e)):
            raise CheckpointError(
                f"{name}: refused to load: {_describe_refusal(e)}; PDFNet loads weights only, never code"
            ) from None
        raise CheckpointError(f"{name} is not a PyTorch checkpoint (cannot unpickle it)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError) as e:
        reason = first_line(e)
        if "zip archive" in reason or isinstance(e, EOFError):
            reason = "truncated or not a PyTorch file"
        raise CheckpointError(f"{name} cannot be read as a checkpoint ({reason})") from None
    except Exception:  # damaged bytes reach the unpickler's every corner (IndexError, struct.error, ...)
        raise CheckpointError(f"{name} is not a PyTorch checkpoint (cannot unpickle it)") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a checkpoint (a dict of tensors)")
    return obj


def _read_safetensors(name: str) -> dict:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError(f"{name}: reading .safetensors needs the safetensors package") from None
    try:
        with safe_open(name, framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{name} cannot be read as a safetensors file ({e})") from None
    return {**tensors, "__metadata__": metadata}


def unwrap_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """The bare state dict inside a checkpoint: accepts ``{"model": sd}``, ``{"state_dict": sd}`` and the
    ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes; leaves out non-tensor entries."""
    for wrapper in ("model", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy into ``module`` every tensor of ``state`` whose name and shape match one of its own.

    Returns:
        (names loaded, names of ``module`` left as they were); raises ValueError when nothing matches.
    """
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise ValueError("no tensor matches by name and shape")
    module.load_state_dict(matched, strict=False)
    return sorted(matched), sorted(set(own) - set(matched))
