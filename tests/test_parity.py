"""Our network against the authors' code: outputs and losses on the reference cases (see tests/reference.py)."""

import numpy as np
import pytest
import torch
from reference import DATA, case_inputs, load_case, synthetic_state_dict

from pdfnet import load_official_checkpoint, pdfnet_loss
from pdfnet.model.swin import SwinEncoder

TOL = 1e-4


@pytest.mark.parametrize("variant", ["cvpr", "release"])
def test_parity_1024(variant):
    case = load_case(variant)
    model = load_official_checkpoint(synthetic_state_dict(variant, int(case["salt"])))
    assert model.variant == variant  # told from the depth head's shapes
    image, depth, depth_target, mask = case_inputs(case)
    with torch.no_grad():
        out = model(image, depth)
    for i, logits in enumerate(out.logits):
        ref = torch.from_numpy(case[f"logits_{i}"])
        assert logits.shape == ref.shape
        assert (logits.sigmoid() - ref.sigmoid()).abs().max().item() < TOL, f"logits_{i}"
    for i, logits in enumerate(out.depth_logits):
        ref = torch.from_numpy(case[f"depth_logits_{i}"])
        assert logits.shape == ref.shape
        assert (logits.sigmoid() - ref.sigmoid()).abs().max().item() < TOL, f"depth_logits_{i}"

    losses = pdfnet_loss(out, mask, depth_target, variant=variant)
    got = np.array([losses[k].item() for k in ("total", "segmentation", "integrity", "depth")])
    np.testing.assert_allclose(got, case["losses"], rtol=TOL)


def test_backbone_96():
    ref = np.load(DATA / "backbone_96.npz")
    weights = synthetic_state_dict("cvpr", int(ref["salt"]), prefix="encoder.")
    encoder = SwinEncoder()
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items()})
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.from_numpy(ref["input"]))
    for i, feature in enumerate(features):
        expected = torch.from_numpy(ref[f"feature_{i}"])
        assert feature.shape == expected.shape
        assert (feature - expected).abs().max().item() < TOL, f"feature_{i}"
