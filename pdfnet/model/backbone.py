"""ImageNet initialisation of the Swin encoder, from Microsoft's or timm's Swin-B weights.

Our encoder uses Microsoft's key names. timm's Swin differs in one structural way: its patch merging opens a
stage (``layers.{i}.downsample`` with i >= 1) where Microsoft's closes the previous one
(``layers.{i-1}.downsample``); the weights themselves are laid out identically.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointError, first_line
from .state_dict import load_matching, read_weights, unwrap_state_dict
from .swin import SwinEncoder

MICROSOFT_SWIN_B = "swin_base_patch4_window12_384_22kto1k.pth"
TIMM_SWIN_B = "swin_base_patch4_window12_384.ms_in22k_ft_in1k"
LOCAL_SWIN_B = f"checkpoints/{MICROSOFT_SWIN_B}"  # where the configs expect Microsoft's file


def swin_b_weights() -> str:
    """A local file of ImageNet Swin-B weights: Microsoft's at :data:`LOCAL_SWIN_B` when it is there, else
    timm's (the same network, ImageNet-22k fine-tuned on 1k at 384 pixels) from the Hugging Face Hub's cache,
    fetched once (:func:`pdfnet.hub.fetch_file`).

    Raises:
        CheckpointError: neither is here and the Hub cannot be reached (said within seconds), saying where to put
            the file.
    """
    if os.path.isfile(LOCAL_SWIN_B):
        return LOCAL_SWIN_B
    from ..hub import fetch_file

    try:
        return fetch_file(f"timm/{TIMM_SWIN_B}", "model.safetensors")
    except Exception as e:  # the hub raises several unrelated types for "offline" and "not found"
        reason = first_line(e)
        raise CheckpointError(
            f"cannot fetch the ImageNet Swin-B weights (model.safetensors of timm/{TIMM_SWIN_B} on the Hugging "
            f"Face Hub): {reason}. Download Microsoft's {MICROSOFT_SWIN_B} (the Swin Transformer release on "
            f"GitHub) into {LOCAL_SWIN_B}"
        ) from None


def is_timm_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """timm's Swin has no downsample in its first stage and one in its last."""
    has_first = any(k.startswith("layers.0.downsample.") for k in state_dict)
    return not has_first and any(re.match(r"layers\.\d+\.downsample\.", k) for k in state_dict)


def convert_timm_swin(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Swin keys -> Microsoft's (ours): ``layers.{i}.downsample`` -> ``layers.{i-1}.downsample``."""

    def rename(key: str) -> str:
        return re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key)

    return {rename(k): v for k, v in state_dict.items()}


def load_swin_weights(encoder: SwinEncoder, source: str | os.PathLike | Mapping) -> tuple[list[str], list[str]]:
    """Copy ImageNet Swin weights into ``encoder``, keeping every tensor whose name and shape match (as the
    original does: the classifier, the final norm and index buffers are left out, and the absolute position
    embedding and the four output norms keep their initialisation).

    Args:
        source: a checkpoint file (Microsoft's or timm's layout, optionally under "model"/"state_dict"),
            ``timm:<model name>`` to have timm download the weights, or a loaded state dict.

    Returns:
        (names loaded, names of the encoder left as initialised).

    Raises:
        CheckpointError: no such file (saying where to get it), an unreadable file, or nothing in it matches the
            encoder.
    """
    if isinstance(source, Mapping):
        state = unwrap_state_dict(source)
    elif str(source).startswith("timm:"):
        import timm

        state = timm.create_model(str(source)[len("timm:") :], pretrained=True).state_dict()
    else:
        if not os.path.exists(source):
            raise CheckpointError(
                f"no Swin weights at {source}: download Microsoft's {MICROSOFT_SWIN_B} (the Swin Transformer "
                f"release on GitHub) into checkpoints/, or set train.pretrained_backbone=timm:{TIMM_SWIN_B} "
                "(downloads through timm), or null to start from random weights"
            )
        state = unwrap_state_dict(read_weights(source))
    if is_timm_layout(state):
        state = convert_timm_swin(state)
    try:
        return load_matching(encoder, state)
    except ValueError:
        raise CheckpointError(
            f"no tensor of {source} matches the Swin encoder (not Swin weights, or another Swin size)"
        ) from None
