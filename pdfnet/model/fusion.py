"""Cross-modal fusion of the image, depth and patch streams: the paper's CoA and FSE blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_variant
from .fastpath import attention
from .layers import ConvNormAct, RMSNorm, SwiGLU, resize_like
from .patch import expand_cells, patch_means


class CoA(nn.Module):
    """CoA, the cross-attention block: queries from one stream attend to keys/values from others.

    Single-head attention without biases, then a SwiGLU feed-forward, each followed by RMSNorm and a residual
    (post-norm on the branch, not on the sum). The two versions of the original differ only in training: the
    ``release`` code normalises after dropout, the ``cvpr`` code before; in eval mode both are the same.

    Args:
        dim: token channels.
        dropout: dropout of the attention weights and of both branches (0.1 in the original).
        norm_after_dropout: the ``release`` order.

    Shapes: ``query`` (B, Nq, dim), ``context`` (B, Nk, dim) -> (B, Nq, dim).
    """

    def __init__(self, dim: int, dropout: float = 0.1, norm_after_dropout: bool = False) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm_after_dropout = norm_after_dropout
        # One packed (3 * dim, dim) projection, the layout of nn.MultiheadAttention's in_proj_weight.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.norm1 = RMSNorm(dim, channels_last=True)
        self.ffn = SwiGLU(dim, dim)
        self.norm2 = RMSNorm(dim, channels_last=True)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _branch(self, x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        if self.norm_after_dropout:
            return norm(F.dropout(x, self.dropout, self.training))
        return F.dropout(norm(x), self.dropout, self.training)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        wq, wk, wv = self.in_proj_weight.chunk(3)
        # (B, 1, N, dim): one head. A fused kernel never materialises the (Nq, Nk) weights, which reach
        # 16384 x 16384 per image at 1024 px.
        q = F.linear(query, wq).unsqueeze(1)
        k = F.linear(context, wk).unsqueeze(1)
        v = F.linear(context, wv).unsqueeze(1)
        attn = attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = query + self._branch(self.out_proj(attn.squeeze(1)), self.norm1)
        return x + self._branch(self.ffn(x), self.norm2)


def boundary_kernel(size: int) -> int:
    """Side of the box filter that measures boundaries on a map of side ``size``: about size / 8, made odd.

    The original takes size // 8 + 1 when size // 8 is even and size // 8 otherwise, always padding by
    size // 16, so the filtered map keeps its size.
    """
    k = size // 8
    return k + 1 if k % 2 == 0 else k


def boundary_maps(logits: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary and integrity maps of a coarse prediction (the original's ``BIS``).

    Args:
        logits: (B, 1, h, w) side-output logits.
        variant: ``"release"`` or ``"cvpr"``.

    Returns:
        boundary (B, 1, h, w) and integrity (B, 1, h, w), both >= 0.

    ``release``: s = sigmoid(sigmoid(logits)) (the original applies sigmoid twice, once in each of two helper
    functions; kept), boundary = 2 |s - boxfilter(s)|, integrity = relu(sigmoid(logits) - 5 boundary).
    ``cvpr``: the same |s - boxfilter(s)| without the factor 2, thresholded at 0.1 to {0, 1} only when
    h // 8 is even (the original thresholds in one branch of a parity test and not in the other; kept),
    integrity = relu(sigmoid(logits) - boundary).
    """
    h, w = logits.shape[-2:]
    prob = logits.sigmoid()
    s = prob.sigmoid()
    kh, kw = boundary_kernel(h), boundary_kernel(w)
    # count_include_pad=True, as the original: the zero padding darkens the mean near the border.
    smooth = F.avg_pool2d(s, kernel_size=(kh, kw), stride=1, padding=(kh // 2, kw // 2))
    edge = (s - smooth).abs()
    if variant == "release":
        boundary = 2 * edge
        return boundary, F.relu(prob - 5 * boundary)
    if (h // 8) % 2 == 0:
        edge = (edge > 0.1).to(edge.dtype)
    return edge, F.relu(prob - edge)


def patch_weights(boundary: torch.Tensor, grid: int, variant: str) -> torch.Tensor:
    """One weight per patch from its mean boundary score: (B, 1, h, w) -> (B, 1, grid, grid).

    ``release``: 1 + 5 * score; ``cvpr``: 2 where the patch touches any boundary, else 1.
    """
    score = patch_means(boundary, grid)
    if variant == "release":
        return 1 + 5 * score
    return 1 + (score > 0).to(score.dtype)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, H * W, C) -> (B, C, H, W), a channels-last view of contiguous tokens."""
    return x.reshape(x.shape[0], H, W, -1).permute(0, 3, 1, 2)


class FSE(nn.Module):
    """FSE, the feature selection and enhancement stage: fuses the image, depth and patch streams.

    Guided by the previous (coarser) prediction it: gates all three streams with its probability; builds the
    boundary and integrity maps; strengthens the depth stream with the integrity prior; weights each patch of
    the patch grid by its boundary score (the patch selection); then runs four CoA cross-attentions
    (patch <- image+depth, image <- patch, depth <- image+patch, image <- depth) over optionally pooled
    tokens, with residuals from the projected inputs.

    Args:
        in_dim: channels of each incoming stream (the concatenation of a coarser and a current level).
        dim: fused channels.
        pool: average-pooling factor of the key/value tokens (1 or 2), to bound attention cost.
        grid: patch grid side (8).
        variant: ``"release"`` or ``"cvpr"``.
        use_depth, use_patches: whether the depth and patch streams exist (the ablations of
            :class:`~pdfnet.config.ModelConfig`). Without one, its projection, its gating or weighting and its
            two CoA blocks are gone, and the other streams' CoA blocks take the remaining stream as context.
        use_coa: run the CoA blocks; without them (or without a stream to exchange with) the projected streams
            are returned as they are.

    Shapes: ``image`` (B, in_dim, h, w), ``depth`` (B, in_dim, h, w), ``patch`` (B, in_dim, 2h, 2w),
    ``prev_logits`` (B, 1, hp, wp); returns image (B, dim, h, w), depth (B, dim, h, w), patch (B, dim, 2h, 2w).
    A stream the stage was built without is None in and out.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        pool: int,
        grid: int,
        variant: str,
        dropout: float = 0.1,
        use_depth: bool = True,
        use_patches: bool = True,
        use_coa: bool = True,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.grid = grid
        self.variant = check_variant(variant)
        self.image_proj = ConvNormAct(in_dim, dim)
        self.patch_proj = ConvNormAct(in_dim, dim) if use_patches else None
        self.depth_proj = ConvNormAct(in_dim, dim) if use_depth else None
        self.exchange = use_coa and (use_depth or use_patches)
        norm_after_dropout = variant == "release"

        def coa(present: bool) -> CoA | None:
            return CoA(dim, dropout, norm_after_dropout) if self.exchange and present else None

        self.image_from_patch = coa(use_patches)
        self.patch_from_context = coa(use_patches)
        self.image_from_depth = coa(use_depth)
        self.depth_from_context = coa(use_depth)

    def _pooled_tokens(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if self.pool > 1:
            x = F.adaptive_avg_pool2d(x, (H // self.pool, W // self.pool))
        return to_tokens(x)

    def forward(
        self,
        image: torch.Tensor,
        depth: torch.Tensor | None,
        patch: torch.Tensor | None,
        prev_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        boundary, integrity = boundary_maps(prev_logits, self.variant)
        prob = prev_logits.sigmoid()
        image = image * resize_like(prob, image)
        image_cs = self.image_proj(image)
        depth_cs = patch_cs = None
        if patch is not None:
            patch = patch * resize_like(prob, patch)
        if depth is not None:
            # The original gates depth by the probability and then multiplies by (probability + integrity) again.
            prob_d = resize_like(prob, depth)
            depth = depth * prob_d * (resize_like(prev_logits, depth).sigmoid() + resize_like(integrity, depth))
            depth_cs = self.depth_proj(depth)
        if patch is not None:
            weights = patch_weights(boundary, self.grid, self.variant)  # (B, 1, grid, grid)
            patch_cs = self.patch_proj(patch * expand_cells(weights, patch.shape[-2:]))
        if not self.exchange:
            # without CoA the projected streams go on as they are: the decoder's stream-mixing convolution is
            # then the only place they meet
            return image_cs, depth_cs, patch_cs

        H, W = image_cs.shape[-2:]
        image_tokens = to_tokens(image_cs)  # (B, H*W, dim), never pooled: it is the query of two attentions
        image_kv = self._pooled_tokens(image_cs)
        depth_kv = self._pooled_tokens(depth_cs) if depth_cs is not None else None
        patch_kv = self._pooled_tokens(patch_cs) if patch_cs is not None else None

        image_out = image_tokens
        if patch_kv is not None:
            patch_out = self.patch_from_context(patch_kv, _context(image_kv, depth_kv))
            image_out = self.image_from_patch(image_out, patch_out)
            ph, pw = patch_cs.shape[-2] // self.pool, patch_cs.shape[-1] // self.pool
            patch_cs = resize_like(to_map(patch_out, ph, pw), patch_cs) + patch_cs
        if depth_kv is not None:
            depth_out = self.depth_from_context(depth_kv, _context(image_kv, patch_kv))
            image_out = self.image_from_depth(image_out, depth_out)
            dh, dw = depth_cs.shape[-2] // self.pool, depth_cs.shape[-1] // self.pool
            depth_cs = resize_like(to_map(depth_out, dh, dw), depth_cs) + depth_cs
        return to_map(image_out, H, W) + image_cs, depth_cs, patch_cs


def _context(image_kv: torch.Tensor, other_kv: torch.Tensor | None) -> torch.Tensor:
    """The key/value tokens of a CoA block: the image's and the other stream's (when there is one) in a row."""
    return image_kv if other_kv is None else torch.cat([image_kv, other_kv], dim=1)
