"""Foreground colours for cutouts: accuracy on a composite with known colours, the fast path against a plain 2-D
implementation of the same model, and the numpy, tensor and CUDA entry points agreeing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pdfnet
from pdfnet.errors import InputError
from pdfnet.inference.foreground import ForegroundSettings, refine_foreground, refine_foreground_tensor


def composite(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, alpha, true foreground): a soft disc with a speckle of faint pixels, a red foreground with a green
    ramp over a teal background; alpha is quantised to 8 bits first and the photo composed with exactly it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 3 + 1), (xx - w / 2) / (w / 3 + 1))
    alpha = np.clip((1.2 - r) * 3, 0, 1)
    alpha[rng.random((h, w)) < 0.05] = rng.random() * 0.5
    fg = np.zeros((h, w, 3))
    fg[..., 0], fg[..., 1], fg[..., 2] = 0.9, np.linspace(0.2, 0.6, w)[None], 0.1
    bg = np.zeros((h, w, 3))
    bg[..., 1], bg[..., 2] = 0.8, 0.3
    a8 = np.round(alpha * 255).astype(np.uint8)
    a = a8[..., None] / 255.0
    photo = np.round((a * fg + (1 - a) * bg) * 255).astype(np.uint8)
    return photo, a8, np.round(fg * 255).astype(np.uint8)


def reference_foreground(photo: np.ndarray, alpha: np.ndarray, s: ForegroundSettings) -> np.ndarray:
    """The same model, plainly: every level relaxed whole in float64 with 2-D shifts.

    Outside the image, alpha and the level's starting F and B are the border's, held fixed over the sweeps
    (the boundary condition the fast path's read ring gives).
    """
    image = torch.from_numpy(photo).permute(2, 0, 1).double() / 255
    a_full = torch.from_numpy(alpha).double()[None] / 255
    H, W = alpha.shape
    fg, bg = (a_full > 0.9).double(), (a_full < 0.1).double()
    fb = torch.cat([(image * fg).sum((1, 2)) / (fg.sum() + 1e-5), (image * bg).sum((1, 2)) / (bg.sum() + 1e-5)]).view(
        6, 1, 1
    )
    levels = (max(H, W) - 1).bit_length()  # halvings down to 1x1
    for level in range(levels, -1, -1):
        step = 2**level
        img, a = image[:, ::step, ::step], a_full[:, ::step, ::step]
        h, w = a.shape[-2:]
        fb = fb.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w] if fb.shape[-1] > 1 else fb.expand(6, h, w)
        padded = F.pad(fb[None], (1, 1, 1, 1), mode="replicate")[0].clone()  # (6, h + 2, w + 2)
        a_pad = F.pad(a[None], (1, 1, 1, 1), mode="replicate")[0]
        shifts = [(1, 0), (1, 2), (0, 1), (2, 1)]  # left, right, up, down neighbours in the padded grid
        weights = [s.regularization + s.gradient_weight * (a_pad[:, y : y + h, x : x + w] - a).abs() for y, x in shifts]
        total = sum(weights)
        for _ in range(s.sweeps_at(level, h, w)):
            near = sum(wt * padded[:, y : y + h, x : x + w] for wt, (y, x) in zip(weights, shifts))  # (6, h, w)
            # minimise |a F + (1 - a) B - I|^2 + total |F - NF / total|^2 + ...: the 2x2 system per pixel
            m00, m01, m11 = a * a + total, a * (1 - a), (1 - a) ** 2 + total
            r0, r1 = a * img + near[:3], (1 - a) * img + near[3:]
            det = m00 * m11 - m01 * m01
            new_f, new_b = (m11 * r0 - m01 * r1) / det, (m00 * r1 - m01 * r0) / det
            padded[:, 1:-1, 1:-1] = torch.cat([new_f, new_b]).clamp(0, 1)
        fb = padded[:, 1:-1, 1:-1]
    result = torch.where(a_full >= 1, image, fb[:3])
    return (result * 255 + 0.5).floor().byte().permute(1, 2, 0).numpy()


def _error(estimate: np.ndarray, truth: np.ndarray, alpha: np.ndarray) -> float:
    soft = (alpha > 0) & (alpha < 255)
    return float(np.abs(estimate.astype(float) - truth)[soft].mean())


def test_refined_colours_are_at_least_twice_as_close_as_the_photo():
    photo, alpha, truth = composite(240, 300)
    refined = refine_foreground(photo, alpha)
    assert refined.shape == photo.shape and refined.dtype == np.uint8
    raw, ours = _error(photo, truth, alpha), _error(refined, truth, alpha)
    assert ours < 0.5 * raw, (ours, raw)  # measured: 0.9 against 71 levels
    opaque = alpha == 255
    assert np.array_equal(refined[opaque], photo[opaque])  # alpha 1: exactly the photo


def test_fast_path_agrees_with_the_2d_reference():
    # 300 x 260 is above dense_pixels: the full-resolution level is relaxed in windows (exact on visible pixels)
    photo, alpha, _ = composite(300, 260)
    visible = alpha > 0
    for settings in (ForegroundSettings(), ForegroundSettings(windowed=False, gradient_weight=1.0, sweeps=2)):
        reference = reference_foreground(photo, alpha, settings)
        fast = refine_foreground(photo, alpha, settings)
        assert np.abs(fast.astype(int) - reference)[visible].max() <= 1  # float32 against float64 rounding


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (2, 3), (33, 17), (130, 257)])
def test_any_size(h, w):
    photo, alpha, _ = composite(h, w)
    refined = refine_foreground(photo, alpha)
    assert refined.shape == (h, w, 3)
    assert np.array_equal(refined[alpha == 255], photo[alpha == 255])


def test_constant_alphas():
    photo, _, _ = composite(40, 30)
    assert np.array_equal(refine_foreground(photo, np.full((40, 30), 255, np.uint8)), photo)
    assert refine_foreground(photo, np.zeros((40, 30), np.uint8)).shape == photo.shape


def test_tensors_on_cpu_give_the_numpy_result():
    photo, alpha, _ = composite(200, 260)
    expected = refine_foreground(photo, alpha)
    image_t, alpha_t = torch.from_numpy(photo).permute(2, 0, 1), torch.from_numpy(alpha)
    for image_in, alpha_in in ((image_t, alpha_t), (image_t.float() / 255, alpha_t.float() / 255)):
        result = refine_foreground_tensor(image_in, alpha_in)
        assert result.shape == (3, 200, 260) and result.dtype == torch.float32
        got = (result * 255 + 0.5).floor().byte().permute(1, 2, 0).numpy()
        assert np.abs(got.astype(int) - expected).max() <= 1
    batch = refine_foreground_tensor(image_t[None].expand(2, -1, -1, -1), alpha_t[None, None].expand(2, -1, -1, -1))
    assert batch.shape == (2, 3, 200, 260) and torch.equal(batch[1], refine_foreground_tensor(image_t, alpha_t))
    # float masks in [0, 1] give the uint8 mask's result
    assert np.abs(refine_foreground(photo, alpha / np.float32(255)).astype(int) - expected).max() <= 1


def test_bad_inputs_are_named():
    photo, alpha, _ = composite(20, 30)
    with pytest.raises(InputError, match=r"\(H, W, 3\) uint8"):
        refine_foreground(photo.astype(np.float32), alpha)
    with pytest.raises(InputError, match="matching the image"):
        refine_foreground(photo, alpha[:10])
    with pytest.raises(InputError, match="batch of 2"):
        refine_foreground_tensor(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4))
    assert pdfnet.refine_foreground is refine_foreground  # the lazy public name


@pytest.mark.gpu
def test_cuda_gives_the_cpu_result():
    photo, alpha, _ = composite(500, 640)
    image_t, alpha_t = torch.from_numpy(photo).permute(2, 0, 1).float() / 255, torch.from_numpy(alpha).float() / 255
    cpu = refine_foreground_tensor(image_t, alpha_t, ForegroundSettings(windowed=False))  # CUDA relaxes whole levels
    cuda = refine_foreground_tensor(image_t.cuda(), alpha_t.cuda()).cpu()
    assert (cpu - cuda).abs()[:, torch.from_numpy(alpha > 0)].max() < 2e-3
