"""Foreground colours for cutouts: what the object's semi-transparent pixels look like without the background.

A photo's pixel is ``I = a F + (1 - a) B``. Where the mask is soft (hair, fur, motion blur, glass), keeping the
photo's colour as the cutout's colour keeps the old background too: a cat photographed on grass gets a green
fringe on any new background. :func:`refine_foreground` estimates ``F``.

The model is the multilevel foreground estimation of Germer et al. (2020), the one behind pymatting's
``estimate_foreground_ml``. At every pixel it minimises

    |a F + (1 - a) B - I|^2 + sum over the 4 neighbours j of (eps + g |a - a_j|) (|F - F_j|^2 + |B - B_j|^2)

coarse to fine: level k holds the pixels ``[::2**k, ::2**k]``; the 1x1 level starts from the mean colours of the
clearly opaque and clearly transparent pixels, every finer level starts from the coarser one (nearest
upsampling) and is relaxed by sweeps of the exact per-pixel 2x2 solve for (F, B), clamped to [0, 1].

Where we differ from pymatting, each measured (``scripts/benchmark_foreground.py``):

- Jacobi sweeps (every pixel from the previous sweep) rather than in-place Gauss-Seidel: plain tensor ops, so the
  same code runs on CUDA. Jacobi needs about twice the sweeps for the same error; we run 4 at full resolution and
  1.5x more per coarser level, which converges much further than pymatting's 2 per level.
- ``gradient_weight`` g = 0.1 rather than 1: lower error on every test composite, pymatting's included.
- Where alpha is 1 the colour is exactly the photo's, as the compositing equation says.
- On CPU, levels above 256x256 are relaxed only in windows around the semi-transparent pixels (bands of 64 rows,
  split where 64 columns in a row hold none), each with a halo as wide as its number of sweeps, so that the
  windows get exactly what whole-image sweeps give there; the rest keeps the coarser level's colours (invisible
  where alpha is 0) or the photo's (alpha 1). Every op runs single-threaded and up to two Python threads take
  whole windows: on a shared CPU an OpenMP barrier per small op can cost a scheduler time slice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..errors import InputError

__all__ = ["ForegroundSettings", "estimate_foreground", "refine_foreground", "refine_foreground_tensor"]

Window = tuple[int, int, int, int]  # (y0, y1, x0, x1) of a level


@dataclass(frozen=True)
class ForegroundSettings:
    """The solver's settings; the defaults are the measured best trade-off (README: foreground colours)."""

    regularization: float = 1e-5  # eps: smoothness between all neighbours (pymatting: 1e-5)
    gradient_weight: float = 0.1  # g: extra smoothness where alpha changes (pymatting: 1.0)
    sweeps: int = 4  # Jacobi sweeps at full resolution ...
    growth: float = 1.5  # ... times growth**k at level k (1 / 2**k resolution) ...
    max_sweeps: int = 16  # ... at most this many (more only adds kernel launches on tiny levels) ...
    small_sweeps: int = 10  # ... and at least this many on levels no larger than small_side squared
    small_side: int = 32
    windowed: bool | None = None  # relax large levels only around 0 < alpha < 1 (None: on CPU)
    band: int = 64  # windowed: rows per band
    gap: int = 64  # windowed: a band's columns split where this many in a row hold no soft pixel
    dense_pixels: int = 256 * 256  # windowed: levels up to this many pixels are relaxed whole
    workers: int | None = None  # CPU threads taking windows (None: min(2, torch.get_num_threads()))

    def sweeps_at(self, level: int, h: int, w: int) -> int:
        """Jacobi sweeps for level ``level`` (0: full resolution) of size h x w."""
        k = min(self.max_sweeps, int(round(self.sweeps * self.growth**level)))
        if h <= self.small_side and w <= self.small_side:
            k = max(k, self.small_sweeps)
        return k


DEFAULT_SETTINGS = ForegroundSettings()


def refine_foreground(
    image: np.ndarray, alpha: np.ndarray, settings: ForegroundSettings = DEFAULT_SETTINGS
) -> np.ndarray:
    """The foreground colours of a photo for an RGBA cutout with ``alpha``.

    Args:
        image: (H, W, 3) uint8 RGB photo.
        alpha: (H, W) uint8 (0..255) or float (0..1, clipped) mask.

    Returns:
        (H, W, 3) uint8 RGB: the photo where alpha is 1 (255), the estimated foreground colour where it is
        between, and a smooth extension of the foreground's colours where it is 0 (invisible in the cutout).

    Raises:
        InputError: wrong types or shapes.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be an (H, W, 3) uint8 RGB array, got {_describe(image)}")
    if not isinstance(alpha, np.ndarray) or alpha.shape != image.shape[:2]:
        raise InputError(f"alpha must be an (H, W) array matching the image {image.shape[:2]}, got {_describe(alpha)}")
    # torch wants writable arrays (masks read by PIL are not): a copy only then; nothing is written into them
    image_t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)  # (3, H, W) view
    if alpha.dtype == np.uint8:
        alpha_t = torch.from_numpy(np.require(alpha, requirements=["C", "W"]))
    elif np.issubdtype(alpha.dtype, np.floating) or alpha.dtype == bool:
        alpha_t = torch.from_numpy(np.clip(alpha.astype(np.float32), 0, 1))
    else:
        raise InputError(f"alpha must be uint8 (0..255) or float (0..1), got {alpha.dtype}")
    out = torch.empty(image.shape, dtype=torch.uint8)
    estimate_foreground(image_t, alpha_t, out=out, settings=settings)
    return out.numpy()


def refine_foreground_tensor(
    image: torch.Tensor, alpha: torch.Tensor, settings: ForegroundSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """:func:`refine_foreground` for tensors on any device (CUDA too; there every level is relaxed whole).

    Args:
        image: (3, H, W) or (B, 3, H, W), float in [0, 1] or uint8.
        alpha: (H, W) or (1, H, W) for one image, (B, H, W) or (B, 1, H, W) for a batch; float in [0, 1]
            (clipped) or uint8; moved to the image's device.

    Returns:
        float32 foreground colours in [0, 1], the image's shape, on its device.
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise InputError(f"image must be (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    alpha = alpha.to(image.device)
    if alpha.is_floating_point():
        alpha = alpha.clamp(0, 1)
    if image.dim() == 4:
        alpha = alpha[:, 0] if alpha.dim() == 4 else alpha
        if alpha.dim() != 3 or len(alpha) != len(image):
            raise InputError(f"alpha {tuple(alpha.shape)} does not match a batch of {len(image)} images")
        return torch.stack([estimate_foreground(i, a, settings=settings) for i, a in zip(image, alpha)])
    return estimate_foreground(image, alpha[0] if alpha.dim() == 3 else alpha, settings=settings)


def estimate_foreground(
    image: torch.Tensor,
    alpha: torch.Tensor,
    out: torch.Tensor | None = None,
    settings: ForegroundSettings = DEFAULT_SETTINGS,
) -> torch.Tensor:
    """The solver, on tensors of one device.

    Args:
        image: (3, H, W), float in [0, 1] or uint8 (any strides: a permuted (H, W, 3) array is read in place).
        alpha: (H, W) or (1, H, W), float in [0, 1] or uint8.
        out: where to write: a (3, H, W) float tensor, or an (H, W, 3) uint8 tensor (then ``round(255 F)``);
            a new (3, H, W) float32 tensor if None.

    Returns:
        ``out``, holding F.

    ``torch.set_num_threads(1)`` is in force during a CPU call (it is process-wide: other threads' torch ops run
    single-threaded meanwhile).
    """
    alpha = alpha[None] if alpha.dim() == 2 else alpha
    H, W = alpha.shape[-2:]
    if tuple(image.shape) != (3, H, W):
        raise InputError(f"image {tuple(image.shape)} does not match alpha {tuple(alpha.shape)}")
    if out is None:
        out = torch.empty((3, H, W), dtype=torch.float32, device=image.device)
    cpu = image.device.type == "cpu"
    windowed = cpu if settings.windowed is None else settings.windowed
    workers = settings.workers or (min(2, torch.get_num_threads()) if cpu else 1)
    with contextlib.ExitStack() as stack:
        if cpu:
            stack.enter_context(_torch_threads(1))
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None

        def run_all(fn: Callable[[Window], None], windows: Sequence[Window]) -> None:
            if pool is None:
                for window in windows:
                    fn(window)
            else:
                list(pool.map(fn, windows))

        _solve(image, alpha, out, settings, windowed, run_all)
    return out


def _solve(image, alpha, out, s: ForegroundSettings, windowed: bool, run_all) -> None:
    H, W = alpha.shape[-2:]
    levels = 0  # the coarsest level is 1x1
    while max((H - 1) // 2**levels + 1, (W - 1) // 2**levels + 1) > 1:
        levels += 1
    fb = _mean_colours(image, alpha).to(image.device)  # (6, 1, 1): F and B of the "level" above the coarsest
    for level in range(levels, -1, -1):
        step = 2**level
        img, alp = (image[:, ::step, ::step], alpha[:, ::step, ::step]) if step > 1 else (image, alpha)
        h, w = alp.shape[-2:]
        sweeps = s.sweeps_at(level, h, w)
        whole = not (windowed and h * w > s.dense_pixels)
        final = level == 0
        if whole and not final:
            fb = _relax_window(img, alp, fb, (0, h, 0, w), sweeps, s, final=False).contiguous()
            continue
        windows = [(0, h, 0, w)] if whole else _windows(alp[0], s.band, s.gap)
        if final:
            if not whole:  # outside the windows: the photo where alpha is 1, else the coarser level's F
                _fill_outside(out, image, alpha[0], fb[:3])
            target = out
        else:  # outside the windows F and B keep the coarser level's values
            target = _read(fb, 0, h, 0, w, h, w, upsample=True).contiguous()

        def relax(window: Window, img=img, alp=alp, coarse=fb, sweeps=sweeps, final=final, target=target) -> None:
            result = _relax_window(img, alp, coarse, window, sweeps, s, final)
            y0, y1, x0, x1 = window
            if not final:
                target[:, y0:y1, x0:x1] = result
            elif target.dtype == torch.uint8:  # (H, W, 3) uint8, rounded
                target[y0:y1, x0:x1].copy_(result.mul(255).add_(0.5).permute(1, 2, 0))
            else:
                target[:, y0:y1, x0:x1].copy_(result)

        run_all(relax, windows)
        fb = target


def _relax_window(
    img: torch.Tensor,
    alp: torch.Tensor,
    coarse: torch.Tensor,
    window: Window,
    sweeps: int,
    s: ForegroundSettings,
    final: bool,
) -> torch.Tensor:
    """``sweeps`` Jacobi sweeps on one window of one level.

    Args:
        img: (3, h, w) and alp: (1, h, w), the level (uint8 or float, any strides).
        coarse: (6, ceil(h / 2), ceil(w / 2)) F and B of the coarser level, or (6, 1, 1).
        window: the rectangle whose result is wanted (the core).

    Returns:
        (6, y1 - y0, x1 - x0) float F and B on the core; with ``final``, (3, ...) F with the photo where alpha is 1.

    The core gets a halo as wide as the number of sweeps (so it gets exactly what whole-image sweeps give) and a
    fixed one-pixel ring to read from. Arrays are flat and row-major over the ringed window, so that each
    neighbour is a contiguous slice at offset -1, +1, -row, +row; the ring columns, which the flat range also
    covers, are put back after every sweep.
    """
    h, w = alp.shape[-2:]
    y0, y1, x0, x1 = window
    ey0, ey1, ex0, ex1 = max(0, y0 - sweeps), min(h, y1 + sweeps), max(0, x0 - sweeps), min(w, x1 + sweeps)
    hh, ww = ey1 - ey0, ex1 - ex0
    row = ww + 2
    length = (hh + 2) * row
    s0, s1 = row + 1, length - row - 1  # flat range from (1, 1) to (hh, ww) of the ringed window
    a_ring = _unit(_read(alp, ey0 - 1, ey1 + 1, ex0 - 1, ex1 + 1, h, w)).reshape(1, length)
    fb = coarse.new_empty((6, length))
    grid = fb.view(6, hh + 2, row)
    grid.copy_(_read(coarse, ey0 - 1, ey1 + 1, ex0 - 1, ex1 + 1, h, w, upsample=True))
    if sweeps > 0:
        photo = _unit(_read(img, ey0 - 1, ey1 + 1, ex0 - 1, ex1 + 1, h, w)).reshape(3, length)[:, s0:s1]
        _jacobi(fb, grid, photo, a_ring, s0, s1, row, sweeps, s)
    core = (slice(None), slice(1 + y0 - ey0, 1 + y1 - ey0), slice(1 + x0 - ex0, 1 + x1 - ex0))
    if not final:
        return grid[core]
    opaque = a_ring.view(1, hh + 2, row)[core] >= 1
    return torch.where(opaque, _unit(img[:, y0:y1, x0:x1]), grid[:3][core])


def _jacobi(fb, grid, photo, a_ring, s0: int, s1: int, row: int, sweeps: int, s: ForegroundSettings) -> None:
    """Relax ``fb`` (6, L) in place; ``photo`` (3, s1 - s0) and ``a_ring`` (1, L) as laid out by _relax_window."""
    a0 = a_ring[:, s0:s1]
    # neighbour weights eps + g |a_i - a_j| (left, right, up, down), fixed over the sweeps
    weights = [
        (a_ring[:, s0 + d : s1 + d] - a0).abs_().mul_(s.gradient_weight).add_(s.regularization)
        for d in (-1, 1, -row, row)
    ]
    total = weights[0] + weights[1] + weights[2] + weights[3]
    # per pixel, the inverse of [[a^2 + S, a (1 - a)], [a (1 - a), (1 - a)^2 + S]]
    a1 = 1 - a0
    a01 = a0 * a1
    m00 = a0 * a0 + total
    m11 = a1 * a1 + total
    det_inv = (m00 * m11).sub_(a01 * a01).reciprocal_()
    i00 = m11.mul_(det_inv)
    i01 = a01.mul_(det_inv).neg_()
    i11 = m00.mul_(det_inv)
    p = (i00 * a0).addcmul_(i01, a1).mul(photo)  # F = p + i00 NF + i01 NB
    q = (i01 * a0).addcmul_(i11, a1).mul(photo)  # B = q + i01 NF + i11 NB
    neighbours = fb.new_empty((6, s1 - s0))
    nf, nb = neighbours[:3], neighbours[3:]
    ring_left, ring_right = grid[:, 1:-1, 0].clone(), grid[:, 1:-1, -1].clone()
    for _ in range(sweeps):
        # NF, NB = sum_j w_ij F_j, sum_j w_ij B_j, all from the previous sweep
        torch.mul(fb[:, s0 - 1 : s1 - 1], weights[0], out=neighbours)
        neighbours.addcmul_(fb[:, s0 + 1 : s1 + 1], weights[1])
        neighbours.addcmul_(fb[:, s0 - row : s1 - row], weights[2])
        neighbours.addcmul_(fb[:, s0 + row : s1 + row], weights[3])
        torch.addcmul(p, i00, nf, out=fb[:3, s0:s1]).addcmul_(i01, nb)
        torch.addcmul(q, i01, nf, out=fb[3:, s0:s1]).addcmul_(i11, nb)
        fb[:, s0:s1].clamp_(0, 1)
        grid[:, 1:-1, 0] = ring_left
        grid[:, 1:-1, -1] = ring_right


def _unit(x: torch.Tensor) -> torch.Tensor:
    """A float32 tensor in [0, 1] of a uint8 or float one (not a copy if already float32: never written)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).mul_(1.0 / 255)
    return x.to(torch.float32)


def _soft(a: torch.Tensor) -> torch.Tensor:
    """Where 0 < alpha < 1, as a bool tensor of a's shape."""
    if a.dtype == torch.uint8:
        if a.device.type == "cpu" and a.is_contiguous():  # cv2 is ~20x faster than torch's three ops here
            return torch.from_numpy(cv2.inRange(a.numpy(), 1, 254)).bool()
        return (a > 0) & (a < 255)
    return (a > 0) & (a < 1)


def _mean_colours(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(6, 1, 1): the mean colour of pixels with alpha > 0.9 and of those below 0.1, on about 250,000 pixels."""
    H, W = alpha.shape[-2:]
    stride = max(1, int((H * W / 2.5e5) ** 0.5))
    im = _unit(image[:, ::stride, ::stride]).reshape(3, -1)
    a = _unit(alpha[:, ::stride, ::stride]).reshape(-1)
    fg, bg = (a > 0.9).float(), (a < 0.1).float()
    return torch.cat([(im @ fg) / (fg.sum() + 1e-5), (im @ bg) / (bg.sum() + 1e-5)]).view(6, 1, 1)


def _windows(a: torch.Tensor, band: int, gap: int) -> list[Window]:
    """The windows of a level (h, w) to relax: each band of ``band`` rows split into runs of columns holding a
    soft pixel, runs closer than ``gap`` columns merged. Every soft pixel lies in exactly one window."""
    h, w = a.shape
    soft = _soft(a)
    bands = -(-h // band)
    if bands * band > h:
        soft = torch.cat([soft, soft.new_zeros(bands * band - h, w)])
    columns = soft.view(bands, band, w).any(1).cpu().numpy()  # (bands, w): which columns hold a soft pixel
    windows = []
    for b in range(bands):
        idx = np.flatnonzero(columns[b])
        if idx.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(idx) > gap)
        starts = np.concatenate([[idx[0]], idx[breaks + 1]])
        ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
        windows.extend((b * band, min(h, (b + 1) * band), int(s), int(e)) for s, e in zip(starts, ends))
    return windows


def _read(x: torch.Tensor, r0: int, r1: int, c0: int, c1: int, h: int, w: int, upsample: bool = False) -> torch.Tensor:
    """``x[:, r0:r1, c0:c1]`` of an (h, w) level, with rows and columns outside it replicating the border.

    With ``upsample``, ``x`` is the coarser level, (C, ceil(h / 2), ceil(w / 2)) or a (C, 1, 1) constant, read
    2x nearest-upsampled. A view where possible.
    """
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if upsample and x.shape[-2:] == (1, 1):
        return x.expand(x.shape[0], r1 - r0, c1 - c0)
    if upsample:
        sub = x[:, rr0 // 2 : (rr1 - 1) // 2 + 1, cc0 // 2 : (cc1 - 1) // 2 + 1]
        C, m, n = sub.shape
        sub = sub[:, :, None, :, None].expand(C, m, 2, n, 2).reshape(C, 2 * m, 2 * n)  # each pixel 2x2
        sub = sub[:, rr0 % 2 : rr0 % 2 + rr1 - rr0, cc0 % 2 : cc0 % 2 + cc1 - cc0]
    else:
        sub = x[:, rr0:rr1, cc0:cc1]
    top, bottom, left, right = rr0 - r0, r1 - rr1, cc0 - c0, c1 - cc1
    if not (top or bottom or left or right):
        return sub
    out = sub.new_empty((sub.shape[0], r1 - r0, c1 - c0))
    rows = slice(top, top + rr1 - rr0)
    out[:, rows, left : left + cc1 - cc0] = sub
    if left:
        out[:, rows, :left] = sub[:, :, :1]
    if right:
        out[:, rows, c1 - c0 - right :] = sub[:, :, -1:]
    if top:
        out[:, :top] = out[:, top : top + 1]
    if bottom:
        out[:, r1 - r0 - bottom :] = out[:, r1 - r0 - bottom - 1 : r1 - r0 - bottom]
    return out


def _fill_outside(out: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor, coarse_f: torch.Tensor) -> None:
    """``out`` = the photo where alpha is 1, else ``coarse_f`` (3, ceil(H / 2), ceil(W / 2)) upsampled."""
    H, W = alpha.shape
    image_hwc = image.permute(1, 2, 0)
    fast = out.dtype == torch.uint8 and out.device.type == "cpu" and image.dtype == alpha.dtype == torch.uint8
    if fast and image_hwc.is_contiguous() and alpha.is_contiguous():
        # No full-resolution float buffer: a fresh 100 MB one costs ~50 ms of page faults, and cv2 is ~20x faster
        # than torch on interleaved uint8. cv2's nearest resize maps x -> floor(x * w / W) = x // 2 here.
        coarse = coarse_f.mul(255).add_(0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        out_np = out.numpy()
        cv2.resize(coarse, (W, H), dst=out_np, interpolation=cv2.INTER_NEAREST)
        cv2.copyTo(image_hwc.numpy(), cv2.compare(alpha.numpy(), 255, cv2.CMP_EQ), out_np)
        return
    base = _read(coarse_f, 0, H, 0, W, H, W, upsample=True)
    opaque = alpha == 255 if alpha.dtype == torch.uint8 else alpha >= 1
    if out.dtype == torch.uint8:
        photo = image if image.dtype == torch.uint8 else image.mul(255).add_(0.5).to(torch.uint8)
        out.copy_(torch.where(opaque, photo, base.mul(255).add_(0.5).to(torch.uint8)).permute(1, 2, 0))
    else:
        torch.where(opaque, _unit(image), base, out=out)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


def _describe(x) -> str:
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
