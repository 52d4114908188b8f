"""The fine-grained patch strategy: cut an image into a grid of patches and put their features back."""

from __future__ import annotations

import torch

from .layers import stored_channels_last


def split_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut every image into a ``grid`` x ``grid`` mosaic of equal, non-overlapping patches.

    Args:
        x: (B, C, H, W) with H and W divisible by ``grid``.

    Returns:
        (grid * grid * B, C, H / grid, W / grid), ordered by patch row, then patch column, then image, as
        the original's loop stacks them; channels-last in, channels-last out.
    """
    B, C, H, W = x.shape
    if H % grid or W % grid:
        raise ValueError(f"cannot split a {H}x{W} map into a {grid}x{grid} grid of equal patches")
    if stored_channels_last(x):  # keep the layout: rearrange the (B, H, W, C) view
        x = x.permute(0, 2, 3, 1).reshape(B, grid, H // grid, grid, W // grid, C)
        return x.permute(1, 3, 0, 2, 4, 5).reshape(grid * grid * B, H // grid, W // grid, C).permute(0, 3, 1, 2)
    x = x.view(B, C, grid, H // grid, grid, W // grid)
    return x.permute(2, 4, 0, 1, 3, 5).reshape(grid * grid * B, C, H // grid, W // grid)


def merge_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Stitch patches back into images; the inverse of :func:`split_patches`.

    Args:
        x: (grid * grid * B, C, h, w) in :func:`split_patches` order.

    Returns:
        (B, C, grid * h, grid * w).
    """
    N, C, h, w = x.shape
    B = N // (grid * grid)
    if stored_channels_last(x):
        x = x.permute(0, 2, 3, 1).reshape(grid, grid, B, h, w, C)
        return x.permute(2, 0, 3, 1, 4, 5).reshape(B, grid * h, grid * w, C).permute(0, 3, 1, 2)
    x = x.view(grid, grid, B, C, h, w)
    return x.permute(2, 3, 0, 4, 1, 5).reshape(B, C, grid * h, grid * w)


def patch_means(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean of each grid cell: (B, C, H, W) -> (B, C, grid, grid)."""
    B, C, H, W = x.shape
    if H % grid or W % grid:
        raise ValueError(f"cannot split a {H}x{W} map into a {grid}x{grid} grid of equal patches")
    return x.view(B, C, grid, H // grid, grid, W // grid).mean(dim=(3, 5))


def expand_cells(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Broadcast one value per grid cell over the cell: (B, C, grid, grid) -> (B, C, H, W)."""
    B, C, g, _ = cells.shape
    H, W = size
    return cells[:, :, :, None, :, None].expand(B, C, g, H // g, g, W // g).reshape(B, C, H, W)
