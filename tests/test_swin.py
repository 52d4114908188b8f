"""The Swin encoder: its two exact attention layouts compute the same block outputs, its fused linear the same
layer outputs, and the fast paths step aside for hooks and wrapped layers."""

import pytest
import torch
from torch import nn

from pdfnet.model import fastpath as fp
from pdfnet.model.swin import SingleWindow, SwinBlock, WindowLayout, single_window, stage_layout, window_layout


def _block(dim=32, heads=4, window=12, shift=0) -> SwinBlock:
    torch.manual_seed(0)
    block = SwinBlock(dim=dim, num_heads=heads, window=window, shift=shift).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)  # large position biases and a non-zero qkv bias: the padding keys matter
    return block


@pytest.mark.parametrize("shift", [0, 6])
@pytest.mark.parametrize("size", [(8, 8), (4, 4), (5, 11), (12, 12), (1, 1)])
def test_single_window_matches_windowed(size, shift):
    H, W = size
    block = _block(shift=shift)
    x = torch.randn(3, H, W, 32)
    with torch.no_grad():
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


def test_stage_layout_picks_single_window_only_where_a_map_fits_and_fast_paths_are_on():
    cpu = torch.device("cpu")
    assert isinstance(stage_layout(2, 12, 12, 12, 6, cpu), SingleWindow)
    assert isinstance(stage_layout(2, 13, 12, 12, 6, cpu), WindowLayout)
    with fp.fastpath(False):
        assert isinstance(stage_layout(2, 12, 12, 12, 6, cpu), WindowLayout)
    with pytest.raises(ValueError, match="13x4"):
        single_window(13, 4, 12, 0, cpu)


@pytest.mark.parametrize("shift", [0, 6])
def test_block_equals_its_plain_computation(shift):
    block = _block(shift=shift)
    x = torch.randn(2, 20, 9, 32)
    with torch.no_grad():
        fast = block(x.clone(), stage_layout(2, 20, 9, 12, shift, x.device))
        with fp.fastpath(False):
            plain = block(x.clone(), stage_layout(2, 20, 9, 12, shift, x.device))
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("gelu", [False, True])
def test_fused_linear_runs_onednn_and_matches_the_layer(gelu, monkeypatch):
    op = fp._onednn_linear(torch.float32)
    if op is None:
        pytest.skip("this PyTorch build has no usable oneDNN linear")
    calls = []
    monkeypatch.setitem(fp._ONEDNN_LINEAR, torch.float32, lambda *a: calls.append(1) or op(*a))
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(2, 3, 5, 24)
    expected = layer(x)
    if gelu:
        expected = nn.functional.gelu(expected)
    with torch.no_grad():
        torch.testing.assert_close(fp.linear(layer, x, gelu=gelu), expected, atol=1e-5, rtol=1e-5)
    assert calls == [1]  # the fast path ran
    with torch.no_grad(), fp.fastpath(False):
        torch.testing.assert_close(fp.linear(layer, x, gelu=gelu), expected, atol=0, rtol=0)
    out = fp.linear(layer, x, gelu=gelu)  # with autograd the plain layer runs, and gradients reach it
    assert calls == [1]
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    out.sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_hooks_and_wrapped_layers_are_honoured():
    block = _block()
    x = torch.randn(1, 5, 7, 32)
    layout = stage_layout(1, 5, 7, 12, 0, x.device)
    with torch.no_grad():
        expected = block(x.clone(), layout)
    seen = []
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp"):
        block.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.append(name))
    with torch.no_grad():
        hooked = block(x.clone(), layout)
    assert set(seen) == {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp"}
    torch.testing.assert_close(hooked, expected, atol=1e-5, rtol=1e-5)

    class Scaled(nn.Linear):  # a wrapper in the manner of LoRA: its own forward must run
        def forward(self, x):
            return 2 * super().forward(x)

    block = _block()
    scaled = Scaled(32, 96)
    scaled.load_state_dict(block.attn.qkv.state_dict())
    block.attn.qkv = scaled
    with torch.no_grad():
        assert not torch.allclose(block(x.clone(), layout), expected, atol=1e-3)


def test_switch_reads_the_environment_once_and_python_overrides_it(monkeypatch):
    monkeypatch.setattr(fp, "_from_env", None)
    monkeypatch.setenv(fp.ENV_VAR, "0")
    assert fp.fastpath_enabled() is False
    fp.set_fastpath(True)
    try:
        assert fp.fastpath_enabled() is True
    finally:
        fp.set_fastpath(None)
    assert fp.fastpath_enabled() is False
    monkeypatch.setattr(fp, "_from_env", None)
    monkeypatch.setenv(fp.ENV_VAR, "1")
    assert fp.fastpath_enabled() is True
