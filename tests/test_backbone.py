"""ImageNet Swin initialisation: timm's key layout converts to ours and computes the same features."""

import pytest
import timm
import torch

from pdfnet import CheckpointError
from pdfnet.model.backbone import convert_timm_swin, is_timm_layout, load_swin_weights
from pdfnet.model.swin import SwinEncoder


def test_timm_swin_converts_and_matches():
    torch.manual_seed(0)
    # window 4 on a 256 input: every stage (64, 32, 16, 8 tokens) is larger than the window, so timm keeps
    # its shifted windows and no padding is needed, and both models compute the same thing
    reference = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=256,
        window_size=4,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        num_classes=0,
    ).eval()
    state = reference.state_dict()
    assert is_timm_layout(state)
    encoder = SwinEncoder(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window=4, pos_embed_grid=8)
    encoder.eval()
    loaded, left = load_swin_weights(encoder, state)
    # the position embedding and the four output norms are ours alone
    assert left == ["absolute_pos_embed"] + [f"norm{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    assert "layers.0.downsample.reduction.weight" in loaded
    with torch.no_grad():
        encoder.absolute_pos_embed.zero_()  # timm's Swin has none
        x = torch.randn(1, 3, 256, 256)
        ours = encoder(x)
        theirs = reference.forward_intermediates(x, norm=False, intermediates_only=True, output_fmt="NCHW")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        expected = getattr(encoder, f"norm{i}")(b.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(a, expected, atol=1e-4, rtol=1e-4)


def test_microsoft_layout_is_left_alone():
    state = {"layers.0.downsample.reduction.weight": torch.zeros(1), "layers.2.downsample.norm.weight": torch.zeros(1)}
    assert not is_timm_layout(state)
    renamed = convert_timm_swin({"layers.1.downsample.norm.weight": torch.zeros(1)})
    assert list(renamed) == ["layers.0.downsample.norm.weight"]


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(CheckpointError, match="timm:swin_base_patch4_window12_384"):
        load_swin_weights(SwinEncoder(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)), tmp_path / "x.pth")
