"""``pdfnet convert``: .safetensors conversions of the authors' and our checkpoints predict identical masks,
keep their layout and metadata, load everywhere, and never overwrite silently."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from pdfnet import build_pdfnet, load_official_checkpoint, load_pdfnet
from pdfnet.cli import main
from pdfnet.config import load_config
from pdfnet.model.checkpoint import init_from_checkpoint, is_official_layout
from pdfnet.training.checkpointing import checkpoint_state, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two photos with ready-made depth maps (no depth model needed)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for folder in ("in", "depth"):
        (root / folder).mkdir()
    for i, (h, w) in enumerate([(60, 80), (45, 30)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "in" / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / "depth" / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def our_checkpoint(tmp_path_factory) -> str:
    """A run's last.pt as training writes it (tiny model, one AdamW step's state)."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    model = build_pdfnet(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 3, 256, 256), torch.rand(1, 1, 256, 256)).logits[0].mean().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("run") / "last.pt"
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    save_checkpoint(checkpoint_state(model, optimizer, scaler, cfg, 1, 0.5, None, {}), path)
    return str(path)


def _masks(weights: str, photos: Path, out: Path) -> dict[str, bytes]:
    """Every mask's pixels (the files differ in the weights they record having been made with)."""
    args = ["predict", str(photos / "in"), "--depth", str(photos / "depth"), "--weights", weights, "--out", str(out)]
    assert main([*args, "--format", "mask", "--input-size", "256", "--device", "cpu"]) == 0
    return {p.name: np.asarray(Image.open(p)).tobytes() for p in sorted(out.glob("*.png"))}


@pytest.mark.parametrize("which", ["authors", "ours"])
def test_converted_weights_predict_identical_masks(which, tiny_official_checkpoint, our_checkpoint, photos, tmp_path):
    source = tiny_official_checkpoint if which == "authors" else our_checkpoint
    target = tmp_path / "W.safetensors"
    assert main(["convert", source, "--out", str(target)]) == 0
    assert _masks(str(target), photos, tmp_path / "st") == _masks(source, photos, tmp_path / "pt")
    with safe_open(str(target), "pt") as f:
        metadata, keys = f.metadata(), list(f.keys())
    assert metadata["variant"] == load_pdfnet(source).variant
    config = json.loads(metadata["config"])
    assert config["model"]["embed_dim"] == 16
    if which == "authors":  # kept in their layout: their loader reads it
        assert is_official_layout(dict.fromkeys(keys)) and load_official_checkpoint(target).variant == "release"
    else:  # the run's config, as stored in last.pt
        assert config == torch.load(source, weights_only=True)["config"] and not is_official_layout(dict.fromkeys(keys))
    # fine-tuning starts from it too (train.init_from)
    model = load_pdfnet(source)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    loaded, fresh = init_from_checkpoint(model, target)
    assert not fresh and torch.equal(model.state_dict()[loaded[0]], load_pdfnet(target).state_dict()[loaded[0]])


def test_convert_never_overwrites_silently(tiny_official_checkpoint, tmp_path, capsys):
    target = tmp_path / "W.safetensors"
    assert main(["convert", tiny_official_checkpoint, "--out", str(target)]) == 0
    before = target.read_bytes()
    assert main(["convert", tiny_official_checkpoint, "--out", str(target)]) == 1
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["convert", tiny_official_checkpoint, "--out", str(target), "--overwrite"]) == 0
    before = target.read_bytes()  # safetensors orders the metadata as it likes: rewritten files differ a little
    # never onto its own input, even with --overwrite
    assert main(["convert", str(target), "--out", str(target), "--overwrite"]) == 1
    assert "being converted" in capsys.readouterr().err and target.read_bytes() == before
    # not a checkpoint: named, nothing written
    (tmp_path / "notes.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "notes.pt"), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "notes.pt" in err and "Traceback" not in err and not (tmp_path / "x.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["W.safetensors", "notes.pt"]  # no temporary left


def test_convert_wants_a_safetensors_name(tiny_official_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", tiny_official_checkpoint, "--out", str(tmp_path / "W.pth")])
    assert exit_.value.code == 2 and ".safetensors" in capsys.readouterr().err


def test_the_variant_of_a_headless_checkpoint_is_kept(tmp_path):
    from conftest import TINY_ARCH

    from pdfnet import ModelConfig, to_official_state_dict

    # without a depth head the authors' layout cannot tell cvpr from release: --variant says, the metadata keeps it
    model = build_pdfnet(ModelConfig(variant="cvpr", depth_head=False, **TINY_ARCH))
    torch.save(to_official_state_dict(model), tmp_path / "headless.pth")
    assert load_pdfnet(tmp_path / "headless.pth").variant == "release"
    target = tmp_path / "headless.safetensors"
    assert main(["convert", str(tmp_path / "headless.pth"), "--out", str(target), "--variant", "cvpr"]) == 0
    assert load_pdfnet(target).variant == load_official_checkpoint(target).variant == "cvpr"
