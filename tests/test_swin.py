"""The Swin encoder: its two exact attention layouts compute the same block outputs, its fused linear the same
layer outputs."""

import pytest
import torch

from pdfnet.layers import linear
from pdfnet.swin import SingleWindow, SwinBlock, single_window, stage_layout, window_layout


@pytest.mark.parametrize("shift", [0, 6])
@pytest.mark.parametrize("size", [(8, 8), (4, 4), (5, 11), (12, 12), (1, 1)])
def test_single_window_matches_windowed(size, shift):
    torch.manual_seed(0)
    H, W = size
    block = SwinBlock(dim=32, num_heads=4, window=12, shift=shift).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)  # large position biases and a non-zero qkv bias: the padding keys matter
        x = torch.randn(3, H, W, 32)
        single = block(x, single_window(H, W, 12, shift, x.device))
        windowed = block(x, window_layout(3, H, W, 12, shift, x.device))
    torch.testing.assert_close(single, windowed, atol=2e-5, rtol=2e-5)


def test_single_window_gradients_match():
    torch.manual_seed(0)
    block = SwinBlock(dim=16, num_heads=2, window=6, shift=3)
    x = torch.randn(2, 4, 5, 16)
    grads = []
    for layout in (single_window(4, 5, 6, 3, x.device), window_layout(2, 4, 5, 6, 3, x.device)):
        block.zero_grad()
        block(x, layout).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in block.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4, msg=name)


def test_stage_layout_picks_single_window_only_where_a_map_fits():
    cpu = torch.device("cpu")
    assert isinstance(stage_layout(2, 12, 12, 12, 6, cpu), SingleWindow)
    assert not isinstance(stage_layout(2, 13, 12, 12, 6, cpu), SingleWindow)
    with pytest.raises(ValueError, match="13x4"):
        single_window(13, 4, 12, 0, cpu)


@pytest.mark.parametrize("gelu", [False, True])
def test_fused_linear_matches_the_layers(gelu):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(2, 3, 5, 24)
    expected = layer(x)
    if gelu:
        expected = torch.nn.functional.gelu(expected)
    with torch.no_grad():  # the oneDNN path where the build has it
        torch.testing.assert_close(linear(x, layer, gelu=gelu), expected, atol=1e-5, rtol=1e-5)
    # with autograd the plain layers run, and gradients reach the weights
    out = linear(x, layer, gelu=gelu)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    out.sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
