"""Swin Transformer encoder as PDFNet uses it: a dense backbone with four normalised stage outputs.

This is the detection-style Swin of the original (Microsoft's Swin for dense prediction): feature maps are
padded up to window multiples inside every block, a learned absolute position embedding of 56x56 is resized
bicubically to the patch grid, and every stage output goes through its own LayerNorm. Key names follow
Microsoft's checkpoints (``layers.{i}.blocks.{j}.attn.qkv``, ``layers.{i}.downsample``), so ImageNet weights load
without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from .fastpath import fastpath_enabled, in_place_ok, is_plain, linear


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B, nW, window * window, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, (H // window) * (W // window), window * window, C)


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


@dataclass(frozen=True)
class WindowLayout:
    """Where the tokens of B maps of H x W go when each map is padded to whole windows, cyclically shifted and
    cut into windows (the original's pad, roll and partition), as one gather, and the way back as another.

    The windowed tokens form a (nW * B * N, C) matrix ordered window, then map, then position in the window,
    with the windows grouped by their shifted-window mask: each group is one attention call whose mask
    broadcasts over its rows, where a single call would need the mask copied for every map.

    Attributes:
        gather: (nW * B * N,) row of the flat (B * H * W, C) token matrix each windowed token comes from
            (0 for padding, see ``pad``).
        pad: (P,) rows of the windowed matrix that are padding; None without padding.
        scatter: (B * H * W,) row of the windowed matrix holding each real token.
        groups: (first, end) rows of the windowed matrix, divided by N, per group.
        masks: one additive (N, N) mask per group, or None where the group needs none.
    """

    gather: torch.Tensor
    pad: torch.Tensor | None
    scatter: torch.Tensor
    groups: tuple[tuple[int, int], ...]
    masks: tuple[torch.Tensor | None, ...]


def window_layout(B: int, H: int, W: int, window: int, shift: int, device: torch.device) -> WindowLayout:
    """The :class:`WindowLayout` of B maps of H x W; ``shift`` 0 for plain windows.

    Only index arithmetic on shapes (no data-dependent operations), so it traces under ``torch.compile``.
    """
    Hp, Wp = -(-H // window) * window, -(-W // window) * window
    nh, nw = Hp // window, Wp // window
    N = window * window
    if shift:
        # With the cyclic shift only windows in the last row or column straddle regions; windows off those
        # need no mask, the last column's and the last row's share one mask each, the corner has its own.
        kind = [(i == nh - 1, j == nw - 1) for i in range(nh) for j in range(nw)]
        order = sorted(range(nh * nw), key=lambda w: kind[w])
        full = shifted_window_mask(Hp, Wp, window, shift, device)
        groups, masks, first = [], [], 0
        for end in range(1, len(order) + 1):
            if end == len(order) or kind[order[end]] != kind[order[first]]:
                groups.append((first * B, end * B))
                masks.append(full[order[first]] if any(kind[order[first]]) else None)
                first = end
    else:
        order = list(range(nh * nw))
        groups, masks = [(0, nh * nw * B)], [None]

    idx = dict(device=device, dtype=torch.long)
    order_t = torch.tensor(order, **idx)
    rank = torch.empty_like(order_t)
    rank[order_t] = torch.arange(len(order), **idx)
    # windowed side: ordered window o, position n -> the shifted padded map's (h, w) -> the original's (h, w)
    win = order_t[:, None]
    n = torch.arange(N, **idx)[None, :]
    h = ((win // nw) * window + n // window + shift) % Hp
    w = ((win % nw) * window + n % window + shift) % Wp  # (nW, N)
    real = (h < H) & (w < W)
    offsets = torch.arange(B, **idx)[None, :, None] * (H * W)
    gather = torch.where(real[:, None, :], (h * W + w)[:, None, :] + offsets, 0).reshape(-1)
    pad = None
    if H != Hp or W != Wp:
        # (window, position) of every padding token, in order: the smallest keys are the False ones of `real`
        # (keys are unique, so no stable sort is needed; top-k also exports to ONNX, a stable sort does not)
        key = real.view(-1).to(torch.long) * real.numel() + torch.arange(real.numel(), **idx)
        at = torch.topk(key, Hp * Wp - H * W, largest=False, sorted=True).indices
        pad = ((at[:, None] // N * B + torch.arange(B, **idx)) * N + at[:, None] % N).reshape(-1)
    # map side: real token (b, h, w) -> its shifted position -> window and position in it
    hs = (torch.arange(H, **idx)[:, None] - shift) % Hp
    ws = (torch.arange(W, **idx)[None, :] - shift) % Wp
    o = rank[(hs // window) * nw + ws // window]  # (H, W)
    pos = (hs % window) * window + ws % window
    scatter = (o[None] * B + torch.arange(B, **idx)[:, None, None]) * N + pos[None]  # (B, H, W)
    return WindowLayout(gather, pad, scatter.reshape(-1), tuple(groups), tuple(masks))


@dataclass(frozen=True)
class SingleWindow:
    """The layout of maps no larger than one window (H, W <= window), where padding, shift and partition only
    place the H * W real tokens somewhere in a single window: the 128-pixel patches' last two stages (8x8 and
    4x4 tokens in a 12x12 window).

    Attention there runs on the tokens in map order with no gather. Only real tokens are queries (the
    original discards the padding's outputs), and the padding keys, all the same projected zero token, are one
    key whose bias per query is the log-sum-exp of their position biases and mask: the same softmax.

    Attributes:
        real: (H * W,) window position of each real token, in map order.
        pad: (N - H * W,) window positions of the padding.
        mask: the additive (N, N) shifted-window mask, or None.
    """

    real: torch.Tensor
    pad: torch.Tensor
    mask: torch.Tensor | None


def single_window(H: int, W: int, window: int, shift: int, device: torch.device) -> SingleWindow:
    """The :class:`SingleWindow` layout of H x W maps (H, W <= window); ``shift`` 0 for plain windows."""
    if H > window or W > window:
        raise ValueError(f"a {H}x{W} map does not fit one {window}x{window} window")
    # The roll moves padded-map position (h, w) to ((h - shift) % window, (w - shift) % window). Plain Python on
    # shapes, so it traces under torch.compile.
    real = [((h - shift) % window) * window + (w - shift) % window for h in range(H) for w in range(W)]
    pad = sorted(set(range(window * window)) - set(real))
    mask = shifted_window_mask(window, window, window, shift, device)[0] if shift else None
    idx = dict(device=device, dtype=torch.long)
    return SingleWindow(torch.tensor(real, **idx), torch.tensor(pad, **idx), mask)


Layout = WindowLayout | SingleWindow


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for (..., N, d) queries and (..., M, d) keys and values, ``bias``
    broadcasting to (..., N, M).

    Scaled dot-product attention; on a GPU in fp16/bf16 (a fast path) the original Swin's own computation
    instead: the products in the low precision and the softmax in float32. PyTorch's fused kernels refuse most
    of these additive masks, and its fallback upcasts every product to float32 (measured on an H100: the
    fallback's float32 products alone took 12% of a compiled forward).
    """
    if fastpath_enabled() and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        # the low-precision logits plus the float32 bias are float32, as in the original under autocast
        attn = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + bias.float()
        return torch.matmul(attn.softmax(dim=-1).to(v.dtype), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))


def stage_layout(B: int, H: int, W: int, window: int, shift: int, device: torch.device) -> Layout:
    """The layout of B maps of H x W: :class:`WindowLayout`, or with the fast paths on the cheaper but equal
    :class:`SingleWindow` where a map fits one window."""
    if fastpath_enabled() and H <= window and W <= window:
        return single_window(H, W, window, shift, device)
    return window_layout(B, H, W, window, shift, device)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows with a learned relative position bias, between its
    token projections ``qkv`` and ``proj`` (Microsoft's names).

    The original pads the normed map with zeros up to whole windows, rolls it, partitions it and projects every
    token. A zero token projects to the bias alone, so only the real tokens go through ``qkv`` and the padding
    takes qkv(0): the same numbers at a fraction of the cost on maps much smaller than a window. Pad, roll and
    partition are one gather (:class:`WindowLayout`); the output projection is per token, so it runs after the
    way back, on real tokens only.

    Args:
        dim: channels.
        window: window side; tokens per window N = window^2.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
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

    def padding_qkv(self, like: torch.Tensor) -> torch.Tensor:
        """(3C,) the projection of a padding token: the original pads the normed map with zeros, and a zero
        token projects to the bias alone."""
        return self.qkv(like.new_zeros(self.qkv.in_features))

    def forward(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        """x: (B, H, W, C) normed tokens; layout: :func:`stage_layout` of x for this block's shift. Returns
        (B, H, W, C), the projected attention output."""
        B, H, W, C = x.shape
        qkv = linear(self.qkv, x)
        if isinstance(layout, SingleWindow):
            out = self._attend_single(qkv.view(B, H * W, 3 * C), layout)
        else:
            out = self._attend_windows(qkv.view(B * H * W, 3 * C), layout)
        return linear(self.proj, out.view(B, H, W, C))

    def _attend_windows(self, qkv: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """(B * H * W, 3C) projected real tokens in map order -> (B * H * W, C) attention outputs, in map order."""
        C = qkv.shape[1] // 3
        windows = qkv.index_select(0, layout.gather)  # pad, roll and partition: (nW * B * N, 3C)
        if layout.pad is not None:
            windows[layout.pad] = self.padding_qkv(qkv)
        N = self.window**2
        q, k, v = windows.view(-1, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias()  # (heads, N, N), float32 (window_attention rounds it where it must)
        outs = []
        for (first, end), mask in zip(layout.groups, layout.masks):
            group_bias = (bias if mask is None else bias + mask)[None]  # broadcast over the group
            rows = slice(first, end)
            out = window_attention(q[rows], k[rows], v[rows], group_bias)
            outs.append(out.transpose(1, 2))  # (rows, N, heads, head_dim)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        # back to the map, real tokens only
        return out.reshape(-1, C).index_select(0, layout.scatter)

    def _attend_single(self, qkv: torch.Tensor, layout: SingleWindow) -> torch.Tensor:
        """qkv: (B, L, 3C) projected real tokens of maps that fit one window, in map order -> (B, L, C), the
        attention output before the output projection."""
        B, L, C3 = qkv.shape
        C = C3 // 3
        heads, head_dim = self.num_heads, C // self.num_heads
        q, k, v = qkv.view(B, L, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, L, d)
        bias = self.position_bias()
        if layout.mask is not None:
            bias = bias + layout.mask
        bias = bias[:, layout.real]  # (heads, L, N): real queries
        attn_bias = bias[:, :, layout.real]
        if len(layout.pad):
            # every padding key is qkv(0): one key carrying the summed softmax weight of all of them
            pad_k, pad_v = self.padding_qkv(qkv).view(3, heads, 1, head_dim)[1:]
            k = torch.cat([k, pad_k.expand(B, -1, -1, -1)], dim=2)
            v = torch.cat([v, pad_v.expand(B, -1, -1, -1)], dim=2)
            attn_bias = torch.cat([attn_bias, bias[:, :, layout.pad].float().logsumexp(-1, keepdim=True)], dim=-1)
        out = window_attention(q, k, v, attn_bias[None])
        return out.transpose(1, 2).reshape(B, L, C)


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

    def forward(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        """x: (B, H, W, C); layout: :func:`stage_layout` of x for this block's shift. Returns (B, H, W, C)."""
        x = self._residual(x, self.attn(self.norm1(x), layout))
        return self._residual(x, self._mlp(self.norm2(x)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if fastpath_enabled() and is_plain(self.mlp, Mlp) and is_plain(self.mlp.act, nn.GELU):
            # timm's Mlp is fc1, GELU, fc2 here (its dropouts are off, its norm an identity): the GELU fuses
            return linear(self.mlp.fc2, linear(self.mlp.fc1, x, gelu=True))
        return self.mlp(x)

    def _residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + drop_path(branch); at inference (a fast path) summed into the fresh ``branch``: the same numbers
        without another token-sized buffer per residual."""
        if self.training or not in_place_ok(x, branch):
            return x + self.drop_path(branch)
        return branch.add_(x)


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
        B, H, W = x.shape[:3]
        layouts = {shift: stage_layout(B, H, W, self.window, shift, x.device) for shift in (0, self.shift)}
        for block in self.blocks:
            x = block(x, layouts[block.shift])
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

    Input (B, in_chans, H, W); output four maps (B, embed_dim * 2**i, ceil(H / 2**(i+2)), ...), strides 4..32,
    stored channels-last (``.contiguous()`` them for the default layout).
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
            # (B, C, h, w) views of channels-last memory: callers choose the layout they want
            features.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2))
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
