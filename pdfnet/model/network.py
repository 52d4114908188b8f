"""PDFNet: the network of "High-Precision Dichotomous Image Segmentation via Depth Integrity-Prior and
Fine-Grained Patch Strategy" (Liu, Fu, Zhao), computing exactly what the authors' code computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ..config import ModelConfig, check_variant
from .fastpath import fastpath_enabled
from .fusion import FSE
from .layers import ConvNormAct, resize, resize_like, space_to_depth, stored_channels_last
from .patch import merge_patches, split_patches
from .swin import SwinEncoder

# The five feature levels every stream is reduced to: strides 4, 8, 16, 32 and a global level at stride 32.
Pyramid = list[torch.Tensor]


@dataclass
class PDFNetOutput:
    """What :class:`PDFNet` returns, in training and in evaluation alike.

    Attributes:
        logits: six raw logit maps (B, 1, h, w): the full-resolution prediction (h, w = H, W) first, then the
            deep-supervision side outputs 1..5 at H/4, H/8, H/16, H/32 and H/32.
        depth_logits: five raw logit maps of the depth refinement decoder (H/2, H/8, H/16, H/32, H/64) when
            the model has one, else None.
    """

    logits: list[torch.Tensor]
    depth_logits: list[torch.Tensor] | None = None


class PDFNetDecoder(nn.Module):
    """The segmentation decoder: four FSE stages from coarse to fine, a shallow full-resolution branch and six
    prediction heads.

    Args:
        dim: channels of every stream level (128).
        grid: patch grid side (8).
        variant: ``"release"`` or ``"cvpr"``.
        in_chans: channels of the image and of the (repeated) depth each (3).
        use_depth, use_patches, use_coa: the ablation switches of :class:`~pdfnet.config.ModelConfig`.

    The decoder works at the patch stream's resolution, twice the image stream's: without patches the other
    streams are upsampled to that resolution where the patch stream would set it (the global side output and
    every stage's stream mix), so that every output keeps its size.
    """

    def __init__(
        self,
        dim: int,
        grid: int,
        variant: str,
        in_chans: int = 3,
        dropout: float = 0.1,
        use_depth: bool = True,
        use_patches: bool = True,
        use_coa: bool = True,
    ) -> None:
        super().__init__()
        streams = 1 + use_depth + use_patches
        # coarse to fine; the two finest stages pool keys and values 2x to bound the attention cost
        self.fse = nn.ModuleList(
            FSE(2 * dim, dim, pool, grid, variant, dropout, use_depth, use_patches, use_coa) for pool in (1, 1, 2, 2)
        )
        self.stream_mix = nn.ModuleList(ConvNormAct(streams * dim, dim) for _ in range(4))  # fine to coarse
        # the shallow branch sees image and depth (or the image alone) at 4x the input size through a 4x4
        # stride-4 convolution
        self.shallow_embed = nn.Conv2d((2 if use_depth else 1) * in_chans, dim, kernel_size=4, stride=4)
        self.shallow_refine = ConvNormAct(dim, dim)
        self.upsample1 = ConvNormAct(dim, dim)
        self.upsample2 = ConvNormAct(dim, dim)
        self.heads = nn.ModuleList(nn.Conv2d(dim, 1, kernel_size=3, padding=1) for _ in range(6))

    def forward(
        self,
        image: torch.Tensor,
        depth: torch.Tensor | None,
        image_feats: Pyramid,
        depth_feats: Pyramid | None,
        patch_feats: Pyramid | None,
    ) -> list[torch.Tensor]:
        """image, depth: (B, 3, H, W); *_feats: five (B, dim, h, w) levels (fine to coarse, then global), the
        patch stream at twice the resolution of the other two; depth and patch inputs are None in a decoder
        built without them. Returns the six logit maps."""
        H, W = image.shape[-2:]
        streams = (image_feats, depth_feats, patch_feats)
        side = self.heads[5](_sum(_at_patch_resolution([None if f is None else f[4] for f in streams])))
        sides = [side]
        # coarsest stage: the global level joins level 4; later stages take the previous stage's outputs
        prev = tuple(None if f is None else f[4] for f in streams)
        for stage, level in enumerate((3, 2, 1, 0)):
            img, dep, pat = (
                None if f is None else torch.cat([resize_like(p, f[level]), f[level]], dim=1)
                for p, f in zip(prev, streams)
            )
            img, dep, pat = self.fse[stage](img, dep, pat, side)
            fused = [x for x in _at_patch_resolution([img, dep, pat]) if x is not None]
            mix = self.stream_mix[level](torch.cat(fused, dim=1))
            side = self.heads[level + 1](mix)
            sides.append(side)
            prev = (img, dep, pat)

        # mix: (B, dim, H/4, W/4) after the finest stage
        if fastpath_enabled():
            shallow = self.shallow_branch(image, depth)
        else:  # the original's two layers over the 4x upsampled image and depth
            up = resize(_stack(image, depth), (4 * H, 4 * W))
            shallow = self.shallow_refine(self.shallow_embed(up))
        half = (2 * mix.shape[-2], 2 * mix.shape[-1])
        # (the resized maps are fresh tensors: summing into them saves two image-sized buffers)
        x = self.upsample1(resize(mix, half).add_(resize(shallow, half)))
        # no name keeps shallow or x while the last layer runs: two fewer image-sized maps at its peak
        x, shallow = resize(x, (2 * half[0], 2 * half[1])).add_(shallow), None
        x = self.upsample2(x)
        # sides holds side outputs 5, 4, 3, 2, 1
        return [self.heads[0](x)] + sides[::-1]

    def shallow_branch(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """``shallow_refine(shallow_embed(resize(cat(image, depth), 4x)))``: (B, 3, H, W) twice (or the image
        alone, depth None, in an RGB-only decoder) -> (B, dim, H, W), in the memory format of ``image``.

        Computed with the two convolutions folded into one. The 4x4 stride-4 embedding is a linear map of each
        output pixel's 4x4 block of the upsampled input, and the 3x3 refinement that follows reads the 3x3
        blocks around each pixel: together one 12x12 stride-4 convolution of the upsampled map (padding 4, the
        refinement's padding of one block) with the composed weights. No embedding pass (a 4096-pixel input
        convolution on 6 channels, slow on every backend) and no 128-channel map at 4x the size. On a GPU the
        same weights run as a 3x3 convolution over the map's 4x4 blocks stacked into 96 channels
        (:func:`strided_shallow_conv` says which: the 12x12 form was 10-15% slower on an H200, bf16, batch 8;
        on a CPU it saves the copy into blocks, 192 MiB at 1024 pixels in bf16, and a tenth of the time). The
        embedding's bias, seen through the refinement's zero padding, is a constant map with different values
        on the border, added as a constant and corrected on the border rows and columns. The same function as
        the original's two layers up to float rounding.
        """
        H, W = image.shape[-2:]
        stack = _stack(image, depth)
        if torch.is_autocast_enabled(image.device.type):
            # the embedding would cast the 16x larger upsampled map to the autocast type; cast before upsampling
            stack = stack.to(torch.get_autocast_dtype(image.device.type))
        fmt = torch.channels_last if stored_channels_last(image) else torch.contiguous_format
        up = resize(stack.contiguous(memory_format=fmt), (4 * H, 4 * W))
        embed, conv = self.shallow_embed, self.shallow_refine.conv
        # composed in the weights' precision, also under autocast (which then runs the convolution itself)
        with torch.autocast(image.device.type, enabled=False):
            # tap (4 ky + r, 4 kx + s) of the 12x12 kernel: refinement tap (ky, kx) of embedding tap (r, s)
            weight = torch.einsum("ojyx,jcrs->ocyrxs", conv.weight, embed.weight)  # (dim, 6, 3, 4, 3, 4)
            taps = torch.einsum("ocyx,c->oyx", conv.weight, embed.bias)  # each tap's share of the bias
        bias = conv.bias + taps.sum(dim=(1, 2))
        # (the convolution follows its weight's layout too: give both the input's)
        if strided_shallow_conv(up.device, torch.is_grad_enabled() and weight.requires_grad):
            weight = weight.reshape(conv.out_channels, -1, 12, 12).contiguous(memory_format=fmt)
            x = F.conv2d(up, weight, bias, stride=4, padding=4)
        else:  # block channel (r * 4 + s) * 6 + c, the order of space_to_depth
            weight = weight.permute(0, 3, 5, 1, 2, 4).reshape(conv.out_channels, -1, 3, 3)
            x = F.conv2d(space_to_depth(up, 4), weight.contiguous(memory_format=fmt), bias, padding=1)
        return self.shallow_refine.norm_act(_drop_outside_taps(x, taps))


def _stack(image: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
    """What the shallow branches see: image and depth stacked in channels, or the image alone."""
    return image if depth is None else torch.cat([image, depth], dim=1)


def _at_patch_resolution(levels: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Image, depth and patch maps of one level (absent streams None) resized to the patch stream's resolution,
    or to twice the image stream's where there is no patch stream (the size the patch stream has)."""
    image, patch = levels[0], levels[2]
    size = patch.shape[-2:] if patch is not None else (2 * image.shape[-2], 2 * image.shape[-1])
    return [None if x is None else resize(x, size) for x in levels]


def _sum(maps: list[torch.Tensor | None]) -> torch.Tensor:
    """The sum of the present maps, left to right."""
    present = [x for x in maps if x is not None]
    total = present[0]
    for x in present[1:]:
        total = total + x
    return total


def strided_shallow_conv(device: torch.device, training: bool) -> bool:
    """Whether the shallow branch runs as one 12x12 stride-4 convolution (on a CPU, without gradients) rather
    than a 3x3 one over stacked 4x4 blocks (elsewhere): see :meth:`PDFNetDecoder.shallow_branch`.

    ``training``: the weights need their gradient. oneDNN has no fast kernel for the 12x12 convolution's weight
    gradient on a 4096-pixel map and falls back to its reference loop: a CPU training step at 1024 pixels spent
    over half an hour there, where the 3x3 form's backward takes 2.7 s (at 256 pixels the two backward passes
    take 0.32 s and 0.18 s; 2-core AMD EPYC Zen 4, channels-last)."""
    return device.type == "cpu" and not training


def _drop_outside_taps(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Subtract from the border of ``x`` (B, C, H, W) the 3x3 taps ``taps`` (C, 3, 3) that fall outside the map
    under zero padding: a constant input added everywhere becomes what a padded convolution of it gives."""
    sub = [
        (slice(0, 1), slice(None), taps[:, 0, :].sum(-1)),  # top row: the row above is padding
        (slice(-1, None), slice(None), taps[:, 2, :].sum(-1)),
        (slice(None), slice(0, 1), taps[:, :, 0].sum(-1)),
        (slice(None), slice(-1, None), taps[:, :, 2].sum(-1)),
    ]
    # corners lost a tap to both their row and their column: it was subtracted twice
    add = [
        (slice(i, i + 1 or None), slice(j, j + 1 or None), taps[:, y, z])
        for i, y in ((0, 0), (-1, 2))
        for j, z in ((0, 0), (-1, 2))
    ]
    for rows, cols, value in sub:
        x[:, :, rows, cols] -= value[:, None, None].to(x.dtype)
    for rows, cols, value in add:
        x[:, :, rows, cols] += value[:, None, None].to(x.dtype)
    return x


class DepthRefinementDecoder(nn.Module):
    """The training-only depth head: predicts the pseudo-depth from the encoder's three streams, so that the
    shared encoder learns depth-aware features.

    ``release`` sums the three streams and sees the image in its shallow branch; ``cvpr`` concatenates them and
    sees image and depth.

    Args:
        dim: channels per stream level (128).
        variant: ``"release"`` or ``"cvpr"``.
        in_chans: image channels (3).
        use_patches: whether there is a patch stream to fuse (without, image and depth only).
    """

    def __init__(self, dim: int, variant: str, in_chans: int = 3, use_patches: bool = True) -> None:
        super().__init__()
        self.variant = variant
        streams = 3 if use_patches else 2
        width = streams * dim if variant == "cvpr" else dim  # channels of one fused level
        self.stages = nn.ModuleList(
            nn.Sequential(ConvNormAct(in_dim, 2 * dim), ConvNormAct(2 * dim, dim))
            for in_dim in (2 * width, dim + width, dim + width, dim + width)
        )
        shallow_in = 2 * in_chans if variant == "cvpr" else in_chans
        self.shallow = nn.Conv2d(shallow_in, dim, kernel_size=3, padding=1)
        self.upsample1 = ConvNormAct(dim, dim)
        self.upsample2 = ConvNormAct(dim, dim)
        self.heads = nn.ModuleList(nn.Conv2d(dim, 1, kernel_size=3, padding=1) for _ in range(5))

    def fuse(self, image_feats: Pyramid, depth_feats: Pyramid, patch_feats: Pyramid | None) -> Pyramid:
        """Five fused levels at the image stream's resolution (patch_feats None: image and depth only)."""
        fused = []
        for level, (img, dep) in enumerate(zip(image_feats, depth_feats)):
            streams = [img, dep] if patch_feats is None else [img, dep, resize_like(patch_feats[level], img)]
            fused.append(torch.cat(streams, dim=1) if self.variant == "cvpr" else _sum(streams))
        return fused

    def forward(
        self,
        image: torch.Tensor,
        depth: torch.Tensor,
        image_feats: Pyramid,
        depth_feats: Pyramid,
        patch_feats: Pyramid | None,
    ) -> list[torch.Tensor]:
        """Same inputs as :class:`PDFNetDecoder`; returns five logit maps at H/2, H/8, H/16, H/32, H/64."""
        levels = self.fuse(image_feats, depth_feats, patch_feats)
        x = self.stages[0](torch.cat([levels[4], levels[3]], dim=1))
        decoded = [x]
        for stage, level in zip(self.stages[1:], (2, 1, 0)):
            x = stage(torch.cat([resize_like(x, levels[level]), levels[level]], dim=1))
            decoded.append(x)
        shallow = self.shallow(torch.cat([image, depth], dim=1) if self.variant == "cvpr" else image)
        x = x + resize_like(shallow, x)
        x = self.upsample1(resize(x, (2 * x.shape[-2], 2 * x.shape[-1])))
        x = x + resize_like(shallow, x)
        x = self.upsample2(resize(x, (2 * x.shape[-2], 2 * x.shape[-1])))
        # decoded holds levels 4, 3, 2, 1; the side heads run fine to coarse
        return [self.heads[0](x)] + [head(feat) for head, feat in zip(self.heads[1:], decoded[::-1])]


class PDFNet(nn.Module):
    """PDFNet: a shared Swin encoder over the half-size image, the half-size pseudo-depth and an 8x8 grid of
    full-resolution patches, fused by the FSE decoder.

    Args:
        encoder: the shared backbone; ``encoder.num_features`` gives its four stage widths.
        dim: channels every level is projected to (128).
        grid: patch grid side (8).
        variant: ``"cvpr"`` (the CVPR 2026 code) or ``"release"`` (the March 2025 code and published weights).
        depth_head: build the training-only depth refinement decoder (it needs the depth input).
        dropout: dropout inside the CoA blocks (0.1).
        use_depth, use_patches, use_coa: the ablation switches of :class:`~pdfnet.config.ModelConfig` (all true:
            the paper's network); kept as attributes of the same names.

    ``forward(image, depth)``:
        image: (B, 3, H, W) RGB, ImageNet-normalised; H and W multiples of ``min_size`` (32 * grid, 256).
        depth: (B, 1, H, W) pseudo-depth in [0, 1]; each map is min-max normalised again here, as the
            original does (per sample here, over the batch there: the same at the original's batch size 1).
            An RGB-only network (``use_depth`` false) takes None (a depth map given to it is not read).
        Returns a :class:`PDFNetOutput`.

    ``channels_last`` (attribute): the memory layout of the forward pass, True, False or None (the default:
    channels-last on the CPU and for fp16/bf16 inference on a GPU, the standard layout elsewhere). Results agree
    within float rounding.
    """

    def __init__(
        self,
        encoder: SwinEncoder,
        dim: int = 128,
        grid: int = 8,
        variant: str = "cvpr",
        depth_head: bool = True,
        dropout: float = 0.1,
        use_depth: bool = True,
        use_patches: bool = True,
        use_coa: bool = True,
    ) -> None:
        super().__init__()
        if depth_head and not use_depth:
            raise ValueError("the depth refinement head predicts the depth input: it needs use_depth=True")
        self.variant = check_variant(variant)
        self.grid = grid
        self.use_depth, self.use_patches, self.use_coa = use_depth, use_patches, use_coa
        self.channels_last: bool | None = None  # memory layout of the forward pass; None: where measured faster
        self.encoder = encoder
        self.stage_proj = nn.ModuleList(ConvNormAct(c, dim) for c in encoder.num_features)
        self.global_mix = ConvNormAct(4 * dim, dim)
        self.global_refine = ConvNormAct(dim, dim)
        self.decoder = PDFNetDecoder(
            dim, grid, variant, dropout=dropout, use_depth=use_depth, use_patches=use_patches, use_coa=use_coa
        )
        self.depth_decoder = DepthRefinementDecoder(dim, variant, use_patches=use_patches) if depth_head else None
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("encoder."):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def switches(self) -> dict[str, bool | int]:
        """The ablation switches this network was built with, by their ModelConfig names (``config.SWITCHES``)."""
        return {
            "use_depth": self.use_depth,
            "use_patches": self.use_patches,
            "use_coa": self.use_coa,
            "grid": self.grid,
        }

    @property
    def min_size(self) -> int:
        """Input sides must be multiples of this: the patch stream's coarsest level splits into the grid (without
        patches, the half-size image reaches stride 32)."""
        return 32 * self.grid if self.use_patches else 64

    def encode(self, x: torch.Tensor) -> Pyramid:
        """(N, 3, h, w) -> four projected levels (N, dim, h/4 .. h/32) and the global level (N, dim, h/32), in
        the memory format of ``x``."""
        fmt = torch.channels_last if stored_channels_last(x) else torch.contiguous_format
        levels = [proj(f.contiguous(memory_format=fmt)) for proj, f in zip(self.stage_proj, self.encoder(x))]
        coarsest = levels[3]
        # bilinear downsampling with aligned corners, as the original (no anti-aliasing)
        glob = self.global_mix(torch.cat([resize_like(f, coarsest) for f in levels[:3]] + [coarsest], dim=1))
        return levels + [self.global_refine(glob)]

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> PDFNetOutput:
        self._check_inputs(image, depth)
        B, _, H, W = image.shape
        fmt = torch.channels_last if self._use_channels_last(image.device) else torch.contiguous_format
        image = image.contiguous(memory_format=fmt)
        if self.use_depth:
            depth = normalize_depth(depth).expand(-1, 3, -1, -1).contiguous(memory_format=fmt)
            # image and depth at half size share one encoder batch: (2B, 3, H/2, W/2)
            halves = resize(torch.cat([image, depth], dim=0), (H // 2, W // 2)).contiguous(memory_format=fmt)
            feats = self.encode(halves)
            image_feats, depth_feats = [f[:B] for f in feats], [f[B:] for f in feats]
        else:  # RGB-only: the half-size image alone
            depth, depth_feats = None, None
            image_feats = self.encode(resize(image, (H // 2, W // 2)).contiguous(memory_format=fmt))
        patch_feats = None
        if self.use_patches:
            # the full-resolution patches: (grid^2 B, 3, H/grid, W/grid), features stitched back to (B, dim, ...)
            patches = split_patches(image, self.grid).contiguous(memory_format=fmt)
            patch_feats = [merge_patches(f, self.grid).contiguous(memory_format=fmt) for f in self.encode(patches)]

        logits = self.decoder(image, depth, image_feats, depth_feats, patch_feats)
        depth_logits = None
        if self.depth_decoder is not None:
            depth_logits = self.depth_decoder(image, depth, image_feats, depth_feats, patch_feats)
        return PDFNetOutput(logits=logits, depth_logits=depth_logits)

    def _use_channels_last(self, device: torch.device) -> bool:
        # Channels-last (a fast path) where it was measured faster: on the CPU (its convolutions, norms and token
        # views; a 1024-pixel forward on 2 cores, see scripts/benchmark.py), and on a GPU at reduced-precision
        # inference (an H100, bf16, batch 8: 20.7 -> 26.4 images/s eagerly; training gained nothing).
        if self.channels_last is not None:
            return self.channels_last
        if not fastpath_enabled():
            return False
        if device.type == "cpu":
            return True
        return device.type == "cuda" and not self.training and torch.is_autocast_enabled("cuda")

    def _check_inputs(self, image: torch.Tensor, depth: torch.Tensor | None) -> None:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        if self.use_depth:
            self._check_depth(image, depth)
        H, W = image.shape[-2:]
        if H % self.min_size or W % self.min_size:
            raise ValueError(f"image sides must be multiples of {self.min_size}, got {H}x{W}")

    def _check_depth(self, image: torch.Tensor, depth: torch.Tensor | None) -> None:
        if depth is None:
            raise ValueError("this PDFNet takes a depth map (it was built with use_depth=True)")
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[0] != image.shape[0]:
            raise ValueError(
                f"depth must be (B, 1, H, W) matching image {tuple(image.shape)}, got {tuple(depth.shape)}"
            )
        if depth.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"depth size {tuple(depth.shape[-2:])} differs from image size {tuple(image.shape[-2:])}")


def normalize_depth(depth: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (1, H, W) map to [0, 1]; a constant map becomes zeros (the original divides by
    zero there)."""
    flat = depth.flatten(1)
    lo = flat.min(dim=1).values[:, None, None, None]
    span = flat.max(dim=1).values[:, None, None, None] - lo
    return torch.where(span > 0, (depth - lo) / span.clamp_min(torch.finfo(depth.dtype).tiny), torch.zeros_like(depth))


def build_pdfnet(cfg: ModelConfig) -> PDFNet:
    """The one place a :class:`ModelConfig` becomes a network."""
    encoder = SwinEncoder(
        in_chans=3,
        embed_dim=cfg.embed_dim,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window=cfg.window_size,
        drop_path_rate=cfg.drop_path_rate,
        pos_embed_grid=cfg.pos_embed_grid,
    )
    return PDFNet(
        encoder,
        dim=cfg.dim,
        grid=cfg.grid,
        variant=cfg.variant,
        depth_head=cfg.depth_head,
        dropout=cfg.dropout,
        use_depth=cfg.use_depth,
        use_patches=cfg.use_patches,
        use_coa=cfg.use_coa,
    )


def count_parameters(module: nn.Module | None, exclude: Sequence[str] = ()) -> int:
    """Number of parameters of ``module`` (0 for None), leaving out those whose names start with ``exclude``."""
    if module is None:
        return 0
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(tuple(exclude)))
