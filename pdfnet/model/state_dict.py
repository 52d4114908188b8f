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

from ..errors import CheckpointError


def _describe_refusal(error: Exception) -> str:
    """The useful part of torch's refusal of an unsafe pickle, without its advice to load unsafely."""
    text = str(error)
    found = re.search(r"(Unsupported (?:global|operand)[^\n.]*)", text)
    return found.group(1).strip() if found else "it holds Python objects other than tensors"


def read_weights(path: str | os.PathLike) -> Mapping:
    """What a weight file holds: a ``.safetensors`` file's tensors (with its metadata under ``__metadata__``),
    or a PyTorch file's dict, loaded without running code.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a weight file, or refused as unsafe; the
            message names the file.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CheckpointError(f"no checkpoint at {name}")
    if os.path.isdir(name):
        raise CheckpointError(f"{name} is a folder, not a checkpoint file")
    if os.path.getsize(name) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes): an interrupted download or copy?")
    if name.endswith(".safetensors"):
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
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
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
