"""Loss terms on hand-built masks, with the arithmetic in comments."""

import math

import pytest
import torch

from pdfnet import PDFNetOutput, pdfnet_loss
from pdfnet.training.losses import integrity_prior_loss, silog_loss, ssim_loss, structure_loss


def square_mask(size: int = 64) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., 16:48, 16:48] = 1.0
    return mask


def test_structure_loss_perfect_and_uniform():
    mask = square_mask()
    # logits of +-30: BCE ~ e^-30 ~ 0 and IoU ~ 1, so the loss vanishes
    assert structure_loss(60 * mask - 30, mask).item() == pytest.approx(0.0, abs=1e-6)
    # logits 0: BCE = ln 2 everywhere (any weighting), inter = 0.5 sum(w m), union = sum(0.5 w + w m)
    zero = torch.zeros_like(mask)
    weight = 1 + 5 * (torch.nn.functional.avg_pool2d(mask, 31, 1, 15) - mask).abs()
    inter = 0.5 * (weight * mask).sum()
    union = (weight * (0.5 + mask)).sum()
    expected = math.log(2) + 1 - (inter + 1) / (union - inter + 1)
    assert structure_loss(zero, mask, iou_smooth=1.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ssim_loss_identical_and_inverted():
    mask = square_mask()
    assert ssim_loss(mask, mask).item() == pytest.approx(0.0, abs=1e-6)  # SSIM 1 -> (1 - 1) / 2
    assert ssim_loss(1 - mask, mask).item() > 0.5  # anti-correlated: SSIM < 0


def test_silog_loss():
    target = torch.rand(2, 1, 8, 8) * 0.8 + 0.1
    # equal maps: g = 0, loss = sqrt(eps) = 1e-3
    assert silog_loss(target, target).item() == pytest.approx(1e-3, rel=1e-4)
    # a constant scale s: g = log s everywhere, mean(g^2) - 0.5 mean(g)^2 = 0.5 log(s)^2 (eps aside)
    assert silog_loss(target / 2, target, eps=0).item() == pytest.approx(math.sqrt(0.5) * math.log(2), rel=1e-3)


def test_integrity_prior_loss():
    mask = square_mask()
    flat_depth = torch.zeros_like(mask)  # zero, so that the Sobel's zero padding sees no edge at the border
    # a perfect prediction: p_y = 1, so -log p_y = 0 and both terms vanish
    assert integrity_prior_loss(mask, flat_depth, mask).item() == pytest.approx(0.0, abs=1e-6)
    # prediction 0.5 everywhere on flat depth (no gradients, d = 0 for every pixel):
    # p_y = 0.5, FP = 0.25 (all pixels), FN = 0.5 m; term = ln2 * (0 * FP + 1 * FN) * 0.5 = ln2 * 0.25 m
    half = torch.full_like(mask, 0.5)
    expected = math.log(2) * 0.25 * mask.mean().item()
    assert integrity_prior_loss(half, flat_depth, mask).item() == pytest.approx(expected, rel=1e-5)


def test_integrity_prior_penalises_depth_far_false_positives():
    mask = square_mask()
    depth = torch.full_like(mask, 0.5)
    depth[..., :, :8] = 1.0  # a strip far from the object's depth
    near, far = mask.clone(), mask.clone()
    near[..., 20:28, 48:56] = 1.0  # false positives at the object's depth
    far[..., 20:28, 0:8] = 1.0  # the same area of false positives where depth is far
    soft = lambda m: m * 0.8 + 0.1  # noqa: E731
    assert integrity_prior_loss(soft(far), depth, mask) > integrity_prior_loss(soft(near), depth, mask)


@pytest.mark.parametrize("variant", ["cvpr", "release"])
def test_pdfnet_loss_combination(variant):
    mask = square_mask(64)
    depth = torch.rand(1, 1, 64, 64)
    logits = [torch.randn(1, 1, s, s) for s in (64, 16, 8, 4, 2, 2)]
    depth_logits = [torch.randn(1, 1, s, s) for s in (32, 8, 4, 2, 1)]
    losses = pdfnet_loss(PDFNetOutput(logits, depth_logits), mask, depth, variant=variant)
    total = losses["segmentation"] + losses["integrity"] / 2 + losses["depth"] / 10
    assert losses["total"].item() == pytest.approx(total.item(), rel=1e-6)
    without_depth = pdfnet_loss(PDFNetOutput(logits, None), mask, depth, variant=variant)
    assert without_depth["depth"].item() == 0.0
    assert without_depth["segmentation"].item() == pytest.approx(losses["segmentation"].item(), rel=1e-6)


def test_losses_are_per_sample():
    mask = torch.cat([square_mask(), torch.zeros(1, 1, 64, 64)])
    depth = torch.rand(2, 1, 64, 64)
    logits = [torch.randn(2, 1, s, s) for s in (64, 16, 8, 4, 2, 2)]
    depth_logits = [torch.randn(2, 1, s, s) for s in (32, 8, 4, 2, 1)]
    both = pdfnet_loss(PDFNetOutput(logits, depth_logits), mask, depth)
    assert torch.isfinite(both["total"])  # an empty mask does not divide by zero
    # the loss of the batch [a, b] is the mean of the loss of a and the loss of b, term by term
    singles = [
        pdfnet_loss(
            PDFNetOutput([x[i : i + 1] for x in logits], [x[i : i + 1] for x in depth_logits]),
            mask[i : i + 1],
            depth[i : i + 1],
        )
        for i in range(2)
    ]
    for key in ("total", "segmentation", "integrity", "depth"):
        expected = (singles[0][key] + singles[1][key]) / 2
        torch.testing.assert_close(both[key], expected, atol=1e-6, rtol=1e-5, msg=key)


def test_separable_blur_equals_the_2d_window():
    from pdfnet.training.losses import _gaussian_1d, gaussian_blur

    g = _gaussian_1d()
    window = (g[:, None] @ g[None, :])[None, None]  # the 11x11 window of the original's SSIM
    x = torch.rand(2, 3, 40, 33)
    expected = torch.nn.functional.conv2d(x.reshape(6, 1, 40, 33), window, padding=5).reshape(2, 3, 40, 33)
    torch.testing.assert_close(gaussian_blur(x), expected, atol=1e-6, rtol=1e-5)
