"""Small building blocks shared by the PDFNet decoder and depth head, and the one bilinear resize of the package."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fastpath import in_place_ok


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) float maps to ``size`` (H', W'): the package's one resampling helper.

    ``align_corners=True`` is what the original network and its data loaders use; the loss and the test-time
    augmentation of the original resize with ``align_corners=False``. Returns ``x`` itself when it already has
    that size (bilinear resizing to the same size is the identity either way).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``resize(x, ref.shape[-2:])``."""
    return resize(x, ref.shape[-2:])


def stored_channels_last(x: torch.Tensor) -> bool:
    """Whether x is stored channels-last (and not also plainly contiguous, as single-channel maps are)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """Stack each ``block`` x ``block`` neighbourhood into channels: (B, C, H, W) -> (B, block^2 C, H / block,
    W / block), output channel ``(row * block + col) * C + c``; channels-last in, channels-last out.

    The channel order differs from :func:`torch.nn.functional.pixel_unshuffle` (``c * block^2 + ...``): for a
    channels-last input it moves runs of ``block * C`` contiguous values, several times faster on a CPU.
    """
    B, C, H, W = x.shape
    h, w = H // block, W // block
    if stored_channels_last(x):
        x = x.permute(0, 2, 3, 1).reshape(B, h, block, w, block * C).transpose(2, 3)
        return x.reshape(B, h, w, block * block * C).permute(0, 3, 1, 2)
    x = x.reshape(B, C, h, block, w, block).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(B, block * block * C, h, w)


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

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation written into ``x`` (float32 or bfloat16, and only where nothing needs ``x``
        again, e.g. a convolution's fresh output at inference). Three passes over memory and no image-sized
        temporaries, against about eight for :meth:`forward`: most of a 1024-pixel decoder layer's time on a
        CPU went to those (float rounding differs by about 1e-7 in float32; in bfloat16 the norm is rounded to
        bfloat16 once, an error of the size of the output's own rounding)."""
        if x.dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"in-place RMSNorm needs float32 or bfloat16, got {x.dtype}")
        # the channels last: a contiguous view when x is stored channels-last, a strided one otherwise
        xl = x if self.channels_last else x.movedim(1, -1)
        # sqrt(sum x^2) without a squared copy of x (accumulated in float32 by the kernel, also for bfloat16
        # input; asking for a float32 result instead would first copy all of x to float32)
        inv = torch.linalg.vector_norm(xl, dim=-1, keepdim=True).float()
        inv = inv.square_().div_(xl.shape[-1]).add_(self.eps).rsqrt_()
        xl.mul_(inv.to(x.dtype)).mul_(self.weight.to(x.dtype))
        return x


class ConvNormAct(nn.Sequential):
    """3x3 convolution, channel RMSNorm, SiLU: the unit the whole decoder is built from.

    (B, in_dim, H, W) -> (B, out_dim, H, W), in the memory format of the input (channels-last in, channels-last
    out).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.norm = RMSNorm(out_dim)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self.conv(x))

    def norm_act(self, x: torch.Tensor) -> torch.Tensor:
        """The norm and activation of a convolution's fresh output ``x`` (normalised in place at float32
        inference, and in the CPU's bfloat16 mode: nothing else may hold ``x``). Under autocast the plain norm
        runs: it returns float32 (the float32 scale promotes it), as the original's does, where the in-place one
        would round three times more to bfloat16 (a mean |dprob| of 3.0e-3 from float32 instead of 1.4e-3 on
        the 1024-pixel reference case)."""
        # bfloat16 weights and activations without autocast (the CPU's bf16 mode)
        bf16_throughout = x.dtype == torch.bfloat16 and not torch.is_autocast_enabled(x.device.type)
        if (x.dtype == torch.float32 or bf16_throughout) and in_place_ok(x):
            # nothing keeps the convolution's output: normalise it where it lies (a fast path)
            return self.act(self.norm.forward_(x))
        return self.act(self.norm(x))


class SwiGLU(nn.Module):
    """Gated feed-forward ``w2(silu(w1 x) * w3 x)`` without biases; (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
