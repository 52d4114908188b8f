"""Swin Transformer encoder as PDFNet uses it: a dense backbone with four normalised stage outputs.

This is the detection-style Swin of the original (Microsoft's Swin for dense prediction): feature maps are
padded up to window multiples inside every block, a learned absolute position embedding of 56x56 is resized
bicubically to the patch grid, and every stage output goes through its own LayerNorm. Key names follow
Microsoft's checkpoints (``layers.{i}.blocks.{j}.attn.qkv``, ``layers.{i}.downsample``), so ImageNet weights load
without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B, nW, window * window, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, (H // window) * (W // window), window * window, C)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """(B, nW, window * window, C) -> (B, H, W, C); the inverse of :func:`window_partition`."""
    B, _, _, C = windows.shape
    x = windows.view(B, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2 * window - 1)^2 relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2), >= 0
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(Hp: int, Wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive attention mask for shifted windows: (nW, N, N), 0 within a region and -100 across regions.

    -100 rather than -inf, as in the original: the softmax weight it leaves (e^-100) is what the reference
    outputs contain.
    """
    region = torch.zeros(1, Hp, Wp, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (h, w) in enumerate((h, w) for h in bounds for w in bounds):
        region[:, h, w, :] = label
    region = window_partition(region, window)[0, :, :, 0]  # (nW, N)
    diff = region[:, None, :] - region[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Args:
        dim: channels.
        window: window side; tokens per window N = window^2.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, window: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Recomputed from the window size, never learned: kept out of our state dicts (the authors' and
        # Microsoft's checkpoints carry it; their loaders skip it).
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(num_heads, N, N) bias added to the attention logits."""
        N = self.window**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        return bias.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, nW, N, C); mask: (nW, N, N) additive, or None. Returns (B, nW, N, C)."""
        B, nW, N, C = x.shape
        qkv = self.qkv(x).view(B * nW, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, heads, N, head_dim)
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)
        if mask is None:
            bias = bias.expand(B * nW, -1, -1, -1)  # a broadcast view, no copy
        else:
            bias = (bias[None, None] + mask[None, :, None].to(q.dtype)).expand(B, -1, -1, -1, -1)
            bias = bias.reshape(B * nW, self.num_heads, N, N)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        out = out.transpose(1, 2).reshape(B, nW, N, C)
        return self.proj(out)


class SwinBlock(nn.Module):
    """One Swin block: (shifted) window attention then an MLP, both pre-norm and residual."""

    def __init__(
        self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C); mask: the stage's shifted-window mask. Returns (B, H, W, C)."""
        B, H, W, C = x.shape
        shortcut = x
        x = self.norm1(x)
        # Pad after the norm, as the original: padded tokens are zeros that still take part in attention.
        pad_b, pad_r = (-H) % self.window, (-W) % self.window
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = self.attn(window_partition(x, self.window), mask if self.shift else None)
        x = window_reverse(x, self.window, Hp, Wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(x[:, :H, :W])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat, LayerNorm, linear: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # channel order (row, col) = (0,0), (1,0), (0,1), (1,1), as in Microsoft's weights
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """``depth`` Swin blocks alternating plain and shifted windows, then (optionally) a patch merging."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, drop_path: Sequence[float], downsample: bool
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, drop_path=drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> the stage output (B, H, W, C), before any downsampling."""
        H, W = x.shape[1:3]
        Hp, Wp = -(-H // self.window) * self.window, -(-W // self.window) * self.window
        mask = shifted_window_mask(Hp, Wp, self.window, self.shift, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x


class SwinEncoder(nn.Module):
    """Swin Transformer feature pyramid.

    Args:
        in_chans: input channels.
        embed_dim: channels of the first stage (Swin-B: 128); stage i has ``embed_dim * 2**i``.
        depths: blocks per stage (Swin-B: 2, 2, 18, 2).
        num_heads: heads per stage (Swin-B: 4, 8, 16, 32).
        window: attention window side (12 for the 384-pixel ImageNet weights).
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        pos_embed_grid: side of the learned absolute position embedding (224 / 4 = 56).

    Input (B, in_chans, H, W); output four maps (B, embed_dim * 2**i, ceil(H / 2**(i+2)), ...), strides 4..32.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window: int = 12,
        drop_path_rate: float = 0.1,
        pos_embed_grid: int = 56,
    ) -> None:
        super().__init__()
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, pos_embed_grid, pos_embed_grid))
        trunc_normal_(self.absolute_pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(
                self.num_features[i],
                depths[i],
                num_heads[i],
                window,
                rates[starts[i] : starts[i] + depths[i]],
                downsample=i < len(depths) - 1,
            )
            for i in range(len(depths))
        )
        for i, dim in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, C, H/4, W/4)
        pos = F.interpolate(self.absolute_pos_embed, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = (x + pos).permute(0, 2, 3, 1)  # (B, H/4, W/4, C)
        features = []
        for i, stage in enumerate(self.layers):
            out = stage(x)
            features.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(out)
        return features


class PatchEmbed(nn.Module):
    """4x4 patchify convolution plus LayerNorm; pads H and W up to multiples of 4."""

    def __init__(self, in_chans: int, embed_dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, embed_dim, ceil(H/4), ceil(W/4))."""
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % self.patch, 0, (-H) % self.patch))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
