"""Shapes, patch bookkeeping and input checks on a tiny configuration."""

from dataclasses import replace

import pytest
import torch

from pdfnet import PDFNetOutput, build_pdfnet
from pdfnet.model import network
from pdfnet.model.fusion import boundary_kernel, boundary_maps, patch_weights
from pdfnet.model.layers import resize, space_to_depth
from pdfnet.model.network import PDFNetDecoder, normalize_depth
from pdfnet.model.patch import expand_cells, merge_patches, patch_means, split_patches


@pytest.mark.parametrize("variant", ["cvpr", "release"])
@pytest.mark.parametrize("size", [(256, 256), (256, 512)])
def test_forward_shapes(tiny_config, variant, size):
    model = build_pdfnet(replace(tiny_config, variant=variant))
    H, W = size
    image, depth = torch.randn(2, 3, H, W), torch.rand(2, 1, H, W)
    for training in (True, False):
        model.train(training)
        out = model(image, depth)
        assert isinstance(out, PDFNetOutput)
        assert [tuple(x.shape[-2:]) for x in out.logits] == [
            (H, W),
            (H // 4, W // 4),
            (H // 8, W // 8),
            (H // 16, W // 16),
            (H // 32, W // 32),
            (H // 32, W // 32),
        ]
        assert [tuple(x.shape[-2:]) for x in out.depth_logits] == [
            (H // 2, W // 2),
            (H // 8, W // 8),
            (H // 16, W // 16),
            (H // 32, W // 32),
            (H // 64, W // 64),
        ]
        assert all(x.shape[:2] == (2, 1) for x in out.logits + out.depth_logits)


def test_without_depth_head(tiny_config):
    model = build_pdfnet(replace(tiny_config, depth_head=False)).eval()
    out = model(torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256))
    assert out.depth_logits is None and len(out.logits) == 6


def test_gradients_reach_every_parameter(tiny_config):
    model = build_pdfnet(tiny_config).train()
    out = model(torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256))
    (sum(x.mean() for x in out.logits) + sum(x.mean() for x in out.depth_logits)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_batch_members_are_independent(tiny_config):
    model = build_pdfnet(tiny_config).eval()
    image, depth = torch.randn(2, 3, 256, 256), torch.rand(2, 1, 256, 256)
    with torch.no_grad():
        both = model(image, depth).logits[0]
        first = model(image[:1], depth[:1]).logits[0]
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)


def test_memory_layouts_agree(tiny_config):
    # the CPU runs channels-last by default; other devices use the standard layout
    model = build_pdfnet(tiny_config).eval()
    image, depth = torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256)
    outputs = []
    for channels_last in (True, False):
        model.channels_last = channels_last
        with torch.no_grad():
            outputs.append(model(image, depth))
    for a, b in zip(outputs[0].logits + outputs[0].depth_logits, outputs[1].logits + outputs[1].depth_logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_traces_as_one_graph(tiny_config):
    # torch.compile (the GPU benchmark's fast path) needs every layout to be shape arithmetic: no graph breaks
    model = build_pdfnet(tiny_config).eval()
    image, depth = torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(image, depth).logits[0], model(image, depth).logits[0])


def test_the_shallow_branch_trains_without_the_12x12_convolution_on_a_cpu():
    # its weight gradient has no fast oneDNN kernel at 1024 pixels (a reference loop of over half an hour)
    assert network.strided_shallow_conv(torch.device("cpu"), training=False)
    assert not network.strided_shallow_conv(torch.device("cpu"), training=True)
    assert not network.strided_shallow_conv(torch.device("cuda"), training=False)
    decoder = PDFNetDecoder(dim=16, grid=8, variant="release")
    seen = []
    real = network.strided_shallow_conv

    def spy(device, training):
        seen.append(training)
        return real(device, training)

    image, depth = torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network, "strided_shallow_conv", spy)
        decoder.shallow_branch(image, depth)
        with torch.no_grad():
            decoder.shallow_branch(image, depth)
        decoder.requires_grad_(False)
        decoder.shallow_branch(image, depth)
    assert seen == [True, False, False]


@pytest.mark.parametrize("strided", [True, False])  # the CPU's 12x12 convolution, the GPU's over 4x4 blocks
@pytest.mark.parametrize("channels_last", [True, False])
def test_folded_shallow_branch_matches_its_two_layers(channels_last, strided, monkeypatch):
    monkeypatch.setattr(network, "strided_shallow_conv", lambda device, training: strided)
    # the decoder folds the 4x4 stride-4 embedding into the 3x3 refinement; biases made non-zero so the
    # border correction of the embedding's bias is exercised
    torch.manual_seed(0)
    decoder = PDFNetDecoder(dim=16, grid=8, variant="release")
    for layer in (decoder.shallow_embed, decoder.shallow_refine.conv):
        torch.nn.init.normal_(layer.bias, std=0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    image = torch.randn(2, 3, 12, 20).contiguous(memory_format=fmt)
    depth = torch.rand(2, 3, 12, 20).contiguous(memory_format=fmt)
    up = resize(torch.cat([image, depth], dim=1), (48, 80))
    expected = decoder.shallow_refine(decoder.shallow_embed(up))
    folded = decoder.shallow_branch(image, depth)
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(decoder.shallow_branch(image, depth), expected, atol=1e-5, rtol=1e-5)
    assert decoder.shallow_branch(image, depth).is_contiguous(memory_format=fmt)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # weights still composed in float32
        torch.testing.assert_close(decoder.shallow_branch(image, depth).float(), expected, atol=0.05, rtol=0.05)
    # and it trains the same parameters the same way
    grads = []
    for out in (folded, expected):
        decoder.zero_grad()
        out.square().mean().backward(retain_graph=True)
        grads.append([decoder.shallow_embed.weight.grad.clone(), decoder.shallow_refine.conv.bias.grad.clone()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "image_shape, depth_shape, message",
    [
        ((1, 3, 250, 256), (1, 1, 250, 256), "multiples of 256"),
        ((1, 1, 256, 256), (1, 1, 256, 256), r"image must be \(B, 3, H, W\)"),
        ((1, 3, 256, 256), (1, 1, 128, 128), "depth size"),
    ],
)
def test_bad_inputs_are_explained(tiny_config, image_shape, depth_shape, message):
    model = build_pdfnet(tiny_config)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(image_shape), torch.rand(depth_shape))


def test_split_merge_round_trip():
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).view(2, 3, 16, 24)
    patches = split_patches(x, 8)
    assert patches.shape == (128, 3, 2, 3)
    # patch (row 1, col 2) of image 1 sits at index (1 * 8 + 2) * B + 1, as the original stacks them
    torch.testing.assert_close(patches[(1 * 8 + 2) * 2 + 1], x[1, :, 2:4, 6:9])
    torch.testing.assert_close(merge_patches(patches, 8), x)
    # channels-last in, channels-last out, same values
    x_cl = x.contiguous(memory_format=torch.channels_last)
    patches_cl = split_patches(x_cl, 8)
    assert patches_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(patches_cl, patches)
    torch.testing.assert_close(merge_patches(patches_cl, 8), x)


@pytest.mark.parametrize("channels_last", [True, False])
def test_space_to_depth(channels_last):
    x = torch.randn(2, 3, 8, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = space_to_depth(x, 4)
    assert out.shape == (2, 48, 2, 3) and out.is_contiguous(memory_format=torch.channels_last) == channels_last
    # channel (row * 4 + col) * C + c holds x[c, 4 i + row, 4 j + col]
    assert out[1, (2 * 4 + 3) * 3 + 1, 1, 2] == x[1, 1, 4 + 2, 8 + 3]
    reordered = out.view(2, 4, 4, 3, 2, 3).permute(0, 3, 1, 2, 4, 5).reshape(2, 48, 2, 3)
    torch.testing.assert_close(reordered, torch.nn.functional.pixel_unshuffle(x, 4), rtol=0, atol=0)


def test_patch_means_and_cells():
    x = torch.zeros(1, 1, 16, 16)
    x[..., :2, :2] = 1.0  # only cell (0, 0) is lit, fully
    means = patch_means(x, 8)
    assert means[0, 0, 0, 0] == 1 and means.sum() == 1
    torch.testing.assert_close(expand_cells(means, (16, 16)), x)


def test_boundary_maps_variants():
    logits = torch.full((1, 1, 32, 32), -10.0)
    logits[..., 8:24, 8:24] = 10.0
    # kernel 5 for 32 // 8 = 4 (even, so +1), 3 for 24 // 8 = 3 (odd)
    assert boundary_kernel(32) == 5 and boundary_kernel(24) == 3
    boundary, integrity = boundary_maps(logits, "cvpr")
    assert set(boundary.unique().tolist()) <= {0.0, 1.0}  # thresholded for an even h // 8
    # s = sigmoid(sigmoid(logits)) lies in [0.5, 0.73]; in a 5x5 box the square's corner pixel differs from
    # its mean by (16/25) * 0.23 = 0.15 > 0.1, an edge pixel by only (2/5) * 0.23 = 0.09, the centre by 0
    assert boundary[0, 0, 16, 16] == 0 and boundary[0, 0, 8, 8] == 1 and boundary[0, 0, 8, 16] == 0
    # the zero padding (counted in the mean) lights the image border: 0.5 - 9 * 0.5 / 25 = 0.32
    assert boundary[0, 0, 0, 0] == 1
    assert (
        integrity[0, 0, 16, 16] == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
        and integrity[0, 0, 8, 8] == 0
    )
    boundary_r, integrity_r = boundary_maps(logits, "release")
    assert boundary_r.max() < 1 and boundary_r[0, 0, 16, 16] == pytest.approx(0.0, abs=1e-6)
    weights = patch_weights(boundary, 8, "cvpr")
    assert set(weights.unique().tolist()) == {1.0, 2.0}
    assert patch_weights(boundary_r, 8, "release").min().item() == pytest.approx(1.0, abs=1e-5)  # 1 + 5 * ~0


def test_normalize_depth():
    depth = torch.stack([torch.linspace(0.2, 0.6, 16).view(1, 4, 4), torch.full((1, 4, 4), 0.3)])
    out = normalize_depth(depth)
    assert out[0].min() == 0 and out[0].max() == 1
    assert torch.equal(out[1], torch.zeros(1, 4, 4))  # constant maps do not divide by zero


def test_conv_norm_act_under_autocast_is_the_plain_computation():
    # under autocast the norm stays the original's (float32 statistics and scale, a float32 result): the in-place
    # norm, which rounds to bfloat16 at each step, once tripled the bf16 error of the whole network
    from pdfnet.model.fastpath import fastpath
    from pdfnet.model.layers import ConvNormAct

    torch.manual_seed(0)
    layer = ConvNormAct(8, 16).eval()
    layer.norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with fastpath(True):
            fast = layer(x)
        with fastpath(False):
            plain = layer(x)
    assert fast.dtype == plain.dtype == torch.float32 and torch.equal(fast, plain)
    with torch.no_grad():  # float32: the in-place norm, equal up to rounding
        with fastpath(True):
            fast = layer(x)
        with fastpath(False):
            plain = layer(x)
    assert (fast - plain).abs().max() < 1e-5
