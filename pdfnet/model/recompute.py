"""Activation checkpointing: parts of PDFNet keep only their inputs in the forward pass and compute their
activations again in the backward pass (``torch.utils.checkpoint``, non-reentrant), trading a second forward pass
of those parts for much less memory at 1024 pixels (the README's "Fine-tune on your own photos" has the table).

The gradients are those of the plain network: the recomputation restores the random state (dropout, drop path),
so it draws what the first pass drew. Nothing changes at inference (in eval mode or without gradients the parts
run as they are) nor in the weights or their names: the switch is not stored in a checkpoint.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .network import PDFNet


def checkpointed_parts(model: PDFNet) -> Iterator[tuple[str, nn.Module, str]]:
    """(name, module, method) of every part that recomputes: each Swin block (its windows' attention logits and
    MLP activations are most of the encoder's memory); in each FSE stage its three projections and each of its
    four CoA attentions separately (the finest stage's attention weights reach 16384 x 16384 per image at 1024
    pixels where no fused kernel takes dropout, as on a CPU: recomputed one attention at a time, not four); the
    stream mixing of each decoder level; and the decoder's full-resolution layers (the shallow branch and both
    upsampling layers: 128-channel maps of the input's size, 512 MiB each at 1024 pixels in fp32), likewise in
    the depth head."""
    for i, stage in enumerate(model.encoder.layers):
        for j, block in enumerate(stage.blocks):
            yield f"encoder.layers.{i}.blocks.{j}", block, "forward"
    decoder = model.decoder
    for i, fse in enumerate(decoder.fse):
        for name, part in fse.named_children():
            yield f"decoder.fse.{i}.{name}", part, "forward"
    for i, mix in enumerate(decoder.stream_mix):
        yield f"decoder.stream_mix.{i}", mix, "forward"
    yield "decoder", decoder, "shallow_branch"
    yield "decoder.shallow_refine", decoder.shallow_refine, "forward"  # the original's path (fast paths off)
    for name in ("upsample1", "upsample2"):
        yield f"decoder.{name}", getattr(decoder, name), "forward"
    if model.depth_decoder is not None:
        depth = model.depth_decoder
        for i, stage in enumerate(depth.stages):
            yield f"depth_decoder.stages.{i}", stage, "forward"
        for name in ("upsample1", "upsample2"):
            yield f"depth_decoder.{name}", getattr(depth, name), "forward"


def checkpoint_activations(model: PDFNet, enabled: bool = True) -> PDFNet:
    """Switch activation checkpointing of :func:`checkpointed_parts` on (or back off); returns ``model``.

    The switch is per instance (a copy made with ``copy.deepcopy`` keeps it); it acts only in training mode with
    gradients enabled.
    """
    for _, module, method in checkpointed_parts(model):
        if enabled:
            setattr(module, method, types.MethodType(_recomputed(method), module))
        else:
            module.__dict__.pop(method, None)
    return model


def is_checkpointing(model: PDFNet) -> bool:
    return all(method in module.__dict__ for _, module, method in checkpointed_parts(model))


def _recomputed(method: str):
    """An instance method that runs the class's ``method`` under ``checkpoint`` when it trains. (Bound with
    ``types.MethodType``, so that ``copy.deepcopy`` binds the copy's to the copy.)"""

    def run(self: nn.Module, *args, **kwargs):
        plain = getattr(type(self), method).__get__(self)
        if self.training and torch.is_grad_enabled():
            return checkpoint(plain, *args, use_reentrant=False, **kwargs)
        return plain(*args, **kwargs)

    return run
