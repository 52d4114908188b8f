"""Loading the authors' key layout: mapping, parameter counts, variant detection and named errors."""

import pytest
import torch
from reference import manifest, synthetic_state_dict

from pdfnet import (
    CheckpointError,
    ModelConfig,
    build_pdfnet,
    load_official_checkpoint,
    official_key,
    to_official_state_dict,
)
from pdfnet.model.checkpoint import _RECOMPUTED
from pdfnet.model.network import count_parameters

SALT = 7


@pytest.fixture(scope="module")
def release_weights():
    return synthetic_state_dict("release", SALT)


@pytest.mark.parametrize("variant", ["cvpr", "release"])
def test_keys_and_shapes_match_manifest(variant):
    model = build_pdfnet(ModelConfig(variant=variant))
    ours = {official_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v["shape"]) for k, v in manifest(variant).items() if not _RECOMPUTED.search(k)}
    assert ours == theirs


def test_parameter_counts():
    cvpr, release = build_pdfnet(ModelConfig(variant="cvpr")), build_pdfnet(ModelConfig(variant="release"))
    # The authors' 97,846,544 inference parameters include the 18 fixed Sobel weights of their loss module;
    # ours keeps the loss outside the network, so the network itself has 18 fewer.
    assert count_parameters(cvpr, exclude=["depth_decoder."]) + 18 == 97_846_544
    assert count_parameters(cvpr.depth_decoder) == 6_799_365
    assert count_parameters(release.depth_decoder) == 3_846_789


def test_load_variants(release_weights):
    assert load_official_checkpoint(release_weights).variant == "release"
    inference_only = {k: v for k, v in release_weights.items() if not k.startswith("depth_decoder.")}
    model = load_official_checkpoint(inference_only)
    assert model.variant == "release" and model.depth_decoder is None and not model.training
    assert load_official_checkpoint(inference_only, variant="cvpr").variant == "cvpr"
    with pytest.raises(CheckpointError, match="depth_decoder.shallow.0.weight"):
        load_official_checkpoint(release_weights, variant="cvpr")


def test_loaded_weights_round_trip(release_weights, tmp_path):
    path = tmp_path / "PDFNet_Best.pth"
    torch.save({"model": {f"module.{k}": v for k, v in release_weights.items()}}, path)
    model = load_official_checkpoint(path)
    exported = to_official_state_dict(model)
    assert exported.keys() == release_weights.keys()
    assert all(torch.equal(exported[k], release_weights[k]) for k in exported)


def test_missing_key_is_named(release_weights):
    broken = dict(release_weights)
    del broken["decoder.FSE_mix.2.IP.Norm1.weight"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): decoder\.FSE_mix\.2\.IP\.Norm1\.weight"):
        load_official_checkpoint(broken)


def test_unexpected_key_is_named(release_weights):
    broken = dict(release_weights, **{"decoder.extra_head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): decoder\.extra_head\.weight"):
        load_official_checkpoint(broken)


def test_wrong_shape_is_named(release_weights):
    broken = dict(release_weights, **{"channel_mix3.0.bias": torch.zeros(64)})
    with pytest.raises(CheckpointError, match=r"channel_mix3\.0\.bias: checkpoint \(64,\), model \(128,\)"):
        load_official_checkpoint(broken)


def test_recomputed_buffers_are_accepted(release_weights):
    with_buffers = dict(release_weights)
    with_buffers["encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(144, 144, dtype=torch.long)
    with_buffers["IntegrityPriorLoss.sobel_x.weight"] = torch.zeros(1, 1, 3, 3)
    load_official_checkpoint(with_buffers)
