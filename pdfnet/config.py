"""Typed configuration of the network. Defaults are the paper's Swin-B PDFNet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Everything :func:`pdfnet.build_pdfnet` needs.

    Attributes:
        variant: which version of the authors' code to reproduce: "cvpr" (October 2025, the CVPR 2026 paper)
            or "release" (March 2025, the published checkpoint).
        embed_dim: Swin channels of the first stage (Swin-B: 128).
        depths: Swin blocks per stage (Swin-B: 2, 2, 18, 2).
        num_heads: Swin attention heads per stage (Swin-B: 4, 8, 16, 32).
        window_size: Swin window side (12, as the 384-pixel ImageNet weights).
        drop_path_rate: Swin stochastic depth, rising linearly to this over the blocks (0.1).
        pos_embed_grid: side of Swin's learned absolute position embedding (224 / 4 = 56).
        dim: channels of every decoder level (128).
        grid: patch grid side of the fine-grained patch strategy (8, i.e. 8x8 patches).
        depth_head: build the training-only depth refinement decoder (needed for the depth loss).
        dropout: dropout inside the CoA cross-attention blocks (0.1).
        init_from: optional checkpoint to initialise from (ours or the authors' layout); training only.
    """

    variant: str = "cvpr"
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    drop_path_rate: float = 0.1
    pos_embed_grid: int = 56
    dim: int = 128
    grid: int = 8
    depth_head: bool = True
    dropout: float = 0.1
    init_from: str | None = None
