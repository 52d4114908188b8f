"""Small building blocks shared by the PDFNet decoder and depth head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, the only resampling the original network uses.

    Args:
        x: (B, C, H, W).
        size: target (H', W').

    Returns:
        (B, C, H', W'); ``x`` itself when it already has that size (bilinear with aligned corners is then
        the identity, so skipping it changes nothing).
    """
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``resize(x, ref.shape[-2:])``."""
    return resize(x, ref.shape[-2:])


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no bias (eps 1e-6, statistics in float32).

    Args:
        dim: number of channels.
        channels_last: normalise the last dimension (token sequences, (B, N, C)) instead of dimension 1
            (feature maps, (B, C, H, W)).
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = -1 if self.channels_last else 1
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(dim=dim, keepdim=True) + self.eps)).type_as(x)
        weight = self.weight if self.channels_last else self.weight[:, None, None]
        return weight * normed


class ConvNormAct(nn.Sequential):
    """3x3 convolution, channel RMSNorm, SiLU: the unit the whole decoder is built from.

    (B, in_dim, H, W) -> (B, out_dim, H, W).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.norm = RMSNorm(out_dim)
        self.act = nn.SiLU(inplace=True)


class SwiGLU(nn.Module):
    """Gated feed-forward ``w2(silu(w1 x) * w3 x)`` without biases; (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
