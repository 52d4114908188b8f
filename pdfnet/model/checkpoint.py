"""Loading the authors' checkpoints (``PDFNet_Best.pth`` and any state dict in their key layout).

Our module names say what each part does; the authors' are kept only here, as a mapping from ours to theirs
(the timm habit of a ``checkpoint_filter_fn`` rather than bending attribute names to match a foreign file).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from ..config import ModelConfig, config_from_dict, to_dict
from ..errors import CheckpointError, ConfigError, OutputError
from ..io import atomic_path
from .network import PDFNet, build_pdfnet
from .state_dict import load_matching, read_weights, unwrap_state_dict

# Keys of the authors' state dict that hold no weights of ours: index buffers the Swin attention recomputes
# from its window size, and the fixed Sobel kernels of their loss module.
_RECOMPUTED = re.compile(r"(\.relative_position_index|\.attn_mask)$|^IntegrityPriorLoss\.|^SSIMLoss\.|^SiLogLoss\.")

# Ours -> theirs, applied in order to every key outside the encoder (whose names are Microsoft's in both).
_TO_OFFICIAL: list[tuple[str, str]] = [
    (r"^global_mix\.", "channel_mix."),
    (r"^global_refine\.", "Glob.0."),
    (r"^decoder\.fse\.", "decoder.FSE_mix."),
    (r"\.image_proj\.", ".I_channelswich."),
    (r"\.patch_proj\.", ".P_channelswich."),
    (r"\.depth_proj\.", ".D_channelswich."),
    (r"\.image_from_patch\.", ".IP."),
    (r"\.patch_from_context\.", ".PI."),
    (r"\.image_from_depth\.", ".ID."),
    (r"\.depth_from_context\.", ".DI."),
    (r"\.(IP|PI|ID|DI)\.(in_proj_weight|out_proj)", r".\1.Att.\2"),
    (r"\.(IP|PI|ID|DI)\.norm(\d)", r".\1.Norm\2"),
    (r"\.(IP|PI|ID|DI)\.ffn\.", r".\1.FFN."),
    (r"^decoder\.stream_mix\.", "decoder.channel_mix."),
    (r"^decoder\.shallow_embed\.", "decoder.shallow.0."),
    (r"^decoder\.shallow_refine\.", "decoder.shallow.1."),
    (r"^decoder\.upsample(\d)\.", r"decoder.upsample\1.0."),
    (r"^depth_decoder\.stages\.", "depth_decoder.Decoder."),
    (r"^depth_decoder\.shallow\.", "depth_decoder.shallow.0."),
    (r"\.heads\.", ".Bside."),
    # ConvNormAct is (conv, norm, act) where the authors used an nn.Sequential
    (r"\.conv\.(weight|bias)$", r".0.\1"),
    (r"\.norm\.weight$", r".1.weight"),
]


def official_key(key: str) -> str:
    """The authors' name for one of our state-dict keys."""
    if key.startswith("encoder."):
        return key
    match = re.match(r"^stage_proj\.(\d+)\.", key)
    if match:  # their channel_mix1..4 are our stage_proj.0..3
        key = f"channel_mix{int(match[1]) + 1}." + key[match.end() :]
    for pattern, repl in _TO_OFFICIAL:
        key = re.sub(pattern, repl, key)
    return key


def to_official_state_dict(model: PDFNet) -> dict[str, torch.Tensor]:
    """Our model's weights under the authors' key names (without their recomputed buffers)."""
    return {official_key(k): v for k, v in model.state_dict().items()}


def infer_variant(state_dict: Mapping[str, torch.Tensor], variant: str | None) -> tuple[str, bool]:
    """(variant, has depth head) of an authors'-layout state dict.

    The depth head's shallow convolution sees 6 channels (image and depth) in ``cvpr`` and 3 in ``release``;
    without a depth head the variant cannot be told and defaults to ``release``, the published version.

    Raises:
        CheckpointError: the depth head has another shape, or ``variant`` contradicts it.
    """
    shallow = state_dict.get("depth_decoder.shallow.0.weight")
    if shallow is None:
        return variant or "release", False
    found = {6: "cvpr", 3: "release"}.get(shallow.shape[1]) if shallow.ndim == 4 else None
    if found is None:
        raise CheckpointError(
            f"depth_decoder.shallow.0.weight has shape {tuple(shallow.shape)}; expected 6 or 3 inputs"
        )
    if variant is not None and variant != found:
        raise CheckpointError(
            f"variant={variant!r} contradicts the checkpoint: its depth head (depth_decoder.shallow.0.weight with "
            f"{shallow.shape[1]} input channels) is the {found!r} version's"
        )
    return found, True


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The network sizes of an authors'-layout state dict, read off its shapes (Swin-B PDFNet for theirs).

    The patch grid cannot be read off weights and stays 8.

    Raises:
        CheckpointError: a tensor the architecture is read from is missing or misshapen.
    """
    try:
        embed_dim = state_dict["encoder.patch_embed.proj.weight"].shape[0]
        blocks = [re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.", k) for k in state_dict]
        stages = sorted({(int(m[1]), int(m[2])) for m in blocks if m})
        depths = tuple(sum(1 for s, _ in stages if s == i) for i in range(stages[-1][0] + 1))
        tables = [
            state_dict[f"encoder.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(len(depths))
        ]
        window = (round(math.sqrt(tables[0].shape[0])) + 1) // 2
        return ModelConfig(
            embed_dim=embed_dim,
            depths=depths,
            num_heads=tuple(t.shape[1] for t in tables),
            window_size=window,
            pos_embed_grid=state_dict["encoder.absolute_pos_embed"].shape[-1],
            dim=state_dict["channel_mix1.0.weight"].shape[0],
        )
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"not a PDFNet checkpoint in the authors' layout: cannot find {e}") from None


def load_official_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], variant: str | None = None
) -> PDFNet:
    """Build a :class:`PDFNet` from a checkpoint in the authors' key layout, in eval mode.

    Args:
        path_or_state_dict: a file written by the authors' code (e.g. ``PDFNet_Best.pth``, or its
            ``.safetensors`` conversion) or its state dict.
        variant: "release" or "cvpr"; told from the depth head's shapes when there is one (and then an error
            if it contradicts them), else "release" unless given.

    The architecture is read off the weights' shapes (:func:`infer_architecture`), so narrower networks saved
    in the authors' layout load too.

    Raises:
        CheckpointError: an unreadable file, keys missing from or unexpected in the checkpoint, shapes that do
            not match (each named), or a contradicting variant.
    """
    raw, name = _read(path_or_state_dict)
    try:
        return _build_official(unwrap_state_dict(raw), variant or stored_variant(raw), name)
    except CheckpointError as e:
        raise _named(e, name) from None


def _build_official(state: Mapping[str, torch.Tensor], variant: str | None, name: str) -> PDFNet:
    foreign = foreign_weights(state)
    if foreign is not None:
        raise CheckpointError(f"holds {foreign}")
    variant, depth_head = infer_variant(state, variant)
    cfg = replace(infer_architecture(state), variant=variant, depth_head=depth_head)
    model = build_pdfnet(cfg)
    ours = {official_key(k): k for k in model.state_dict()}
    _checked_load(model, {k: v for k, v in state.items() if not _RECOMPUTED.search(k)}, ours, "the checkpoint's")
    return model.eval()


def _read(source: str | os.PathLike | Mapping) -> tuple[Mapping, str]:
    """(what a checkpoint holds, its name for messages) of a file or an already loaded mapping."""
    if isinstance(source, Mapping):
        return source, "checkpoint"
    return read_weights(source), os.fspath(source)


def _named(error: CheckpointError, name: str) -> CheckpointError:
    """The error with the file's name in front, unless it is there already."""
    text = str(error)
    return error if name in text else CheckpointError(f"{name}: {text}")


def _checked_load(model: PDFNet, state: Mapping[str, torch.Tensor], names: dict[str, str], source: str) -> None:
    """Load ``state`` (keys as in ``names``, which maps them to the model's own) strictly.

    Raises:
        CheckpointError: naming every missing and unexpected key, or every key whose shape differs.
    """
    missing = sorted(set(names) - set(state))
    unexpected = sorted(set(state) - set(names))
    if missing or unexpected:
        raise CheckpointError(_describe(f"{source} keys do not match PDFNet", missing=missing, unexpected=unexpected))
    reference = model.state_dict()
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(reference[ours].shape)}"
        for k, ours in sorted(names.items())
        if tuple(state[k].shape) != tuple(reference[ours].shape)
    ]
    if wrong:
        raise CheckpointError(_describe(f"{source} shapes do not match PDFNet", shapes=wrong))
    model.load_state_dict({ours: state[k] for k, ours in names.items()})


def _describe(title: str, **groups: list[str]) -> str:
    lines = [title]
    for name, items in groups.items():
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"{name} ({len(items)}): " + ", ".join(shown))
    return "; ".join(lines)


def is_official_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict uses the authors' key names (their decoder is ``decoder.FSE_mix``)."""
    return any(k.startswith("decoder.FSE_mix.") for k in state_dict)


def stored_config(checkpoint: Mapping) -> dict | None:
    """The run config stored with one of our checkpoints (a ``.pt`` dict's ``config``, or the JSON in a
    ``.safetensors`` file's metadata), or None."""
    stored = checkpoint.get("config")
    if isinstance(stored, Mapping):
        return dict(stored)
    metadata = checkpoint.get("__metadata__")
    if isinstance(metadata, Mapping) and "config" in metadata:
        try:
            parsed = json.loads(metadata["config"])
        except (TypeError, ValueError):
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def stored_variant(checkpoint: Mapping) -> str | None:
    """The variant written into a ``.safetensors`` file's metadata by :func:`convert_to_safetensors`, or None."""
    metadata = checkpoint.get("__metadata__")
    variant = metadata.get("variant") if isinstance(metadata, Mapping) else None
    return variant if variant in ("release", "cvpr") else None


def model_config_from_checkpoint(checkpoint: Mapping) -> ModelConfig:
    """The model config stored in one of our checkpoints (read and checked like a config file), or the
    default when there is none."""
    stored = stored_config(checkpoint)
    return config_from_dict(stored).model if stored is not None else ModelConfig()


def load_pdfnet(
    path_or_checkpoint: str | os.PathLike | Mapping, variant: str | None = None, eval_mode: bool = True
) -> PDFNet:
    """A :class:`PDFNet` from any checkpoint: ours (a dict with ``model`` and ``config``), the authors' layout,
    or either converted to ``.safetensors``.

    Args:
        path_or_checkpoint: a file or an already loaded checkpoint / state dict.
        variant: for the authors' layout, as :func:`load_official_checkpoint`; for ours, an error if it
            contradicts the stored config.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    checkpoint, name = _read(path_or_checkpoint)
    model = _build_named(checkpoint, variant, name)
    return model.eval() if eval_mode else model.train()


def _build_named(checkpoint: Mapping, variant: str | None, name: str) -> PDFNet:
    """:func:`_build`, its errors naming the file."""
    try:
        return _build(checkpoint, variant, name)
    except CheckpointError as e:
        raise _named(e, name) from None


def foreign_weights(state: Mapping[str, torch.Tensor]) -> str | None:
    """What a state dict holds when it is not PDFNet's (no key of its encoder, in either layout): a depth
    model's, Swin's ImageNet weights, or another model's (some keys named); None when it may be PDFNet's."""
    keys = list(state)
    if any(k.startswith("encoder.") for k in keys):
        return None
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith(("neck.", "head.")) for k in keys):
        return "a depth model's weights (transformers' Depth-Anything/DPT layout): pass its folder as --depth-model"
    if any(k.startswith("layers.0.blocks.") for k in keys) and "patch_embed.proj.weight" in state:
        return "Swin ImageNet weights (a backbone alone): train from them with train.pretrained_backbone=PATH"
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"weights of another model, not PDFNet's (keys {shown})"


def _build(checkpoint: Mapping, variant: str | None, name: str) -> PDFNet:
    state = unwrap_state_dict(checkpoint)
    if not state:
        raise CheckpointError("holds no tensors: not a PDFNet checkpoint")
    if is_official_layout(state):
        return _build_official(state, variant or stored_variant(checkpoint), name)
    foreign = foreign_weights(state)
    if foreign is not None:
        raise CheckpointError(f"holds {foreign}")
    try:
        cfg = model_config_from_checkpoint(checkpoint)
    except ConfigError as e:
        raise CheckpointError(f"its stored config is invalid ({e})") from None
    has_depth_head = any(k.startswith("depth_decoder.") for k in state)
    if variant is not None and variant != cfg.variant:
        raise CheckpointError(f"variant={variant!r} contradicts it: it holds a {cfg.variant!r} model")
    model = build_pdfnet(replace(cfg, depth_head=has_depth_head))
    _checked_load(model, state, {k: k for k in model.state_dict()}, "the checkpoint's")
    return model


def init_from_checkpoint(model: PDFNet, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Copy every tensor of a PDFNet checkpoint (ours or the authors') whose name and shape match, as the
    original's fine-tuning does: e.g. the published ``release`` weights into a ``cvpr`` model keep everything
    but the depth head's first convolutions.

    Returns:
        (names loaded, names left fresh).

    Raises:
        CheckpointError: an unreadable file, or no tensor matches.
    """
    state = unwrap_state_dict(read_weights(path))
    foreign = foreign_weights(state)
    if foreign is not None:
        raise CheckpointError(f"{os.fspath(path)} holds {foreign}")
    own = model.state_dict()
    if is_official_layout(state):
        state = {k: state[official_key(k)] for k in own if official_key(k) in state}
    try:
        return load_matching(model, state)
    except ValueError:
        raise CheckpointError(f"{os.fspath(path)}: no tensor matches the model (not a PDFNet checkpoint?)") from None


def convert_to_safetensors(
    source: str | os.PathLike, target: str | os.PathLike, variant: str | None = None, overwrite: bool = False
) -> dict[str, str]:
    """Write the weights of a PDFNet checkpoint as a ``.safetensors`` file, which every loader reads and which can
    hold nothing but tensors.

    Ours (``last.pt``, ``best.pt``) keep the model's state dict (optimizer and the rest are left out); the
    authors' (``.pth``) keep their key layout, so that :func:`load_official_checkpoint` reads the result as it
    reads them. The metadata holds ``variant`` and ``config``: the stored run config as JSON for ours, the model
    config read off the weights for the authors'.

    Args:
        variant: for an authors'-layout checkpoint without a depth head, which version it is (else ``release``).

    Returns:
        the metadata written.

    Raises:
        CheckpointError: the source is not a PDFNet checkpoint (each problem named).
        OutputError: ``target`` exists (without ``overwrite``), is the source, or cannot be written.
    """
    source_name, target = os.fspath(source), Path(target)
    if target.exists() and os.path.exists(source_name) and os.path.samefile(source_name, target):
        raise OutputError(f"{target} is the checkpoint being converted; choose another --out")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite to replace it")
    checkpoint = read_weights(source_name)
    model = _build_named(checkpoint, variant, source_name)  # checks every key and shape, naming what is wrong
    state = unwrap_state_dict(checkpoint)
    if is_official_layout(state):
        cfg = replace(infer_architecture(state), variant=model.variant, depth_head=model.depth_decoder is not None)
        config = {"model": to_dict(cfg)}
    else:
        config = stored_config(checkpoint) or {"model": to_dict(model_config_from_checkpoint(checkpoint))}
    metadata = {"format": "pt", "variant": model.variant, "config": json.dumps(config)}
    _save_safetensors(state, target, metadata)
    return metadata


def _save_safetensors(state: Mapping[str, torch.Tensor], target: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for key, value in state.items():
        # safetensors refuses tensors sharing memory or not contiguous: copy those (tied weights, views)
        storage = value.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != value.numel() * value.element_size()
        seen.add(storage.data_ptr())
        tensors[key] = value.detach().clone().contiguous() if shared or not value.is_contiguous() else value.detach()
    try:
        with atomic_path(target) as tmp:
            save_file(tensors, tmp, metadata=metadata)
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
