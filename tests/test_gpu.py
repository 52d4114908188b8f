"""On a CUDA GPU: parity in float32 and the reduced-precision budget (skipped without a GPU)."""

import pytest
import torch
from reference import case_inputs, load_case, synthetic_state_dict

from pdfnet import load_official_checkpoint

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cvpr_case():
    case = load_case("cvpr")
    model = load_official_checkpoint(synthetic_state_dict("cvpr", int(case["salt"]))).cuda()
    image, depth, _, _ = case_inputs(case)
    return case, model, image.cuda(), depth.cuda()


def test_parity_fp32_on_gpu(cvpr_case):
    case, model, image, depth = cvpr_case
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        out = model(image, depth)
    ref = torch.from_numpy(case["logits_0"]).cuda()
    assert (out.logits[0].sigmoid() - ref.sigmoid()).abs().max().item() < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_stays_close(cvpr_case, dtype):
    case, model, image, depth = cvpr_case
    with torch.no_grad():
        full = model(image, depth).logits[0].float().sigmoid()
        with torch.autocast("cuda", dtype=dtype):
            low = model(image, depth).logits[0].float().sigmoid()
    assert (low - full).abs().mean().item() < 2e-3
