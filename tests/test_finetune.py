"""pdfnet finetune: folder checks, the seeded validation split, depth maps in their cache, exact resume, the
before/after table; activation checkpointing and the frozen encoder; and that a fine-tune learns."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, make_thin_structures
from PIL import Image

from pdfnet import ModelConfig, build_pdfnet, load_pdfnet
from pdfnet.config import Config, ConfigError, load_config, to_dict
from pdfnet.data.layout import Split, find_split, write_split_file
from pdfnet.data.pairing import check_pairs, mask_notes, mask_problem
from pdfnet.distributed import Runtime
from pdfnet.errors import CheckpointError, DatasetError, OutputError
from pdfnet.model.recompute import checkpoint_activations, checkpointed_parts, is_checkpointing
from pdfnet.training.engine import build_training_model, train
from pdfnet.training.finetune import (
    DEPTH_CACHE,
    FinetuneSetup,
    check_overrides,
    depth_settings,
    drop_stale_maps,
    finetune,
    hold_out,
    resolve_start,
)
from pdfnet.training.losses import pdfnet_loss
from pdfnet.training.schedule import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
# the tiny network at 256 pixels, trained quickly (the tiny.yaml settings)
FAST = [
    "data.input_size=256",
    "data.num_workers=0",
    "train.precision=fp32",
    "train.device=cpu",
    "train.batch_size=2",
    "train.log_images=0",
    "optim.lr=1e-3",
    "optim.min_lr=1e-3",
    "optim.warmup_epochs=0",
]


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny PDFNet saved as one of our checkpoints (what --from takes)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY_ARCH)
    torch.save({"model": build_pdfnet(cfg).state_dict(), "config": to_dict(Config(model=cfg))}, path)
    return path


def luminance_depth(images: Path, folders=("depth_large", "depth_large_1024")) -> None:
    """Depth maps made without a depth model, in finetune's cache: each photo's blurred luminance (nothing of
    the mask in them)."""
    import cv2

    for image in sorted(images.iterdir()):
        grey = cv2.GaussianBlur(np.asarray(Image.open(image).convert("L")), (0, 0), 3)
        for folder in folders:
            out = images.parent / DEPTH_CACHE / images.name / folder
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grey).save(out / f"{image.stem}.png")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdfnet", "finetune", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("start") / "tiny.pt")


# ----------------------------------------------------------------------------------------- the folders


def test_every_mistake_is_listed_at_once_and_nothing_is_written(tmp_path, start):
    images, masks = tmp_path / "photos" / "images", tmp_path / "photos" / "masks"
    make_thin_structures(images, masks, n=6)
    os.remove(masks / "thin_000.png")  # an image without a mask
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(masks / "stray.png")  # a mask without an image
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(masks / "thin_001.png")  # another size
    Image.open(images / "thin_002.jpg").save(masks / "thin_002.png")  # a photo as mask
    Image.fromarray((np.arange(96 * 128).reshape(96, 128) % 2).astype(np.uint8)).save(masks / "thin_003.png")  # 0/1
    (images / "thin_004.jpg").write_bytes(b"not a jpeg")  # unreadable
    cutout = np.zeros((96, 128, 4), np.uint8)
    cutout[30:60, 40:90, 3] = 255
    Image.fromarray(cutout).save(masks / "thin_005.png")  # a cutout: the object in its transparency
    Image.fromarray(np.zeros((20, 1000, 3), np.uint8)).save(images / "sliver.png")  # too thin for the depth model
    Image.fromarray(np.zeros((20, 1000), np.uint8)).save(masks / "sliver.png")
    out = tmp_path / "runs" / "mine"
    result = run_cli(str(images), str(masks), "--out", str(out), "--from", str(start))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: 8 problem(s) with") and "nothing was written" in lines[0]
    problems = "\n".join(lines[1:])
    for expected in (
        "image .*thin_000.jpg has no mask",
        "mask .*stray.png has no image",
        "mask .*thin_001.png is 64x48 but its image thin_001.jpg is 128x96",
        "mask .*thin_002.png is not a mask: .* grey",
        "mask .*thin_003.png is not a black-and-white mask: its brightest value is 1",
        "cannot read image .*thin_004.jpg",
        "mask .*thin_005.png is a cutout: its object is in its transparency",
        "image .*sliver.png \\(1000x20\\) is too elongated for the depth model",
    ):
        assert len([line for line in lines[1:] if re.search(expected, line)]) == 1, expected
    assert len(lines) == 9, problems
    assert not out.exists() and not (tmp_path / "runs").exists()
    assert not (images.parent / DEPTH_CACHE).exists()


def test_notes_on_empty_and_inverted_masks():
    assert mask_notes({"a": 0.1, "b": 0.2}) == []
    [empty] = mask_notes({"a": 0.0, "b": 0.2})
    assert empty.startswith("1 mask(s) have no object (all black): a")
    [inverted] = mask_notes({"a": 0.9, "b": 0.95, "c": 0.1})
    assert "2 of 3 masks are mostly white" in inverted and "inverted" in inverted


def test_depth_maps_older_than_their_photo_are_made_again(tmp_path):
    make_thin_structures(tmp_path / "im", tmp_path / "gt", n=3)
    luminance_depth(tmp_path / "im", folders=("depth_large",))
    split = Split("x", "x", tmp_path / "im", tmp_path / "gt", tmp_path / DEPTH_CACHE / "im", "x", None)
    assert drop_stale_maps([split], "depth_large") == 0
    later = (tmp_path / "im" / "thin_001.jpg").stat().st_mtime + 10
    os.utime(tmp_path / "im" / "thin_001.jpg", (later, later))  # the photo edited after its map was made
    assert drop_stale_maps([split], "depth_large") == 1
    assert sorted(os.listdir(split.depth_dir("depth_large"))) == ["thin_000.png", "thin_002.png"]


def test_good_masks_pass_and_soft_edges_are_masks():
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, :] = 255
    mask[39, :] = mask[60, :] = 128  # anti-aliased edges
    assert mask_problem(mask) is None
    assert mask_problem(np.zeros((10, 10), np.uint8)) is None  # empty: allowed (noted by finetune)
    assert "grey" in mask_problem(np.full((10, 10), 100, np.uint8))
    assert "brightest value is 1" in mask_problem((np.eye(10) > 0).astype(np.uint8))


def test_pairs_exif_rotated_photo_with_its_upright_mask(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 128x96, shown rotated: 96x128 upright
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(tmp_path / "im" / "a.jpg", exif=exif)
    Image.fromarray(np.zeros((128, 96), np.uint8)).save(tmp_path / "gt" / "a.png")
    found = check_pairs(tmp_path / "im", tmp_path / "gt")
    assert found.problems == [] and [p.stem for p in found.pairs] == ["a"]


def test_hold_out_is_seeded_and_disjoint():
    stems = [f"s{i}" for i in range(30)]
    train, val = hold_out(stems, 0.1, seed=0)
    assert len(val) == 3 and len(train) == 27 and not set(train) & set(val) and sorted(train + val) == sorted(stems)
    assert hold_out(stems, 0.1, seed=0) == (train, val)
    assert hold_out(stems, 0.1, seed=1)[1] != val
    assert hold_out(["a", "b"], 0.1, 0)[0] and len(hold_out(["a", "b"], 0.9, 0)[1]) == 1  # one each side


def test_depth_models_and_overrides():
    folders, train, evaluation, target = depth_settings(["large=/models/da", "small"])
    assert folders == {"depth_small": "small", "depth_large": "/models/da", "depth_large_1024": "/models/da"}
    assert (train, evaluation, target) == (("depth_small", "depth_large"), "depth_large", "depth_large_1024")
    assert depth_settings(["small"])[1:] == (("depth_small",), "depth_small", "depth_small_1024")
    for bad in (["huge"], ["large", "large"], ["large="]):
        with pytest.raises(ConfigError, match="--depth-models"):
            depth_settings(bad)
    check_overrides(["train.epochs=3", "train.freeze=encoder"])
    with pytest.raises(ConfigError, match="data.root is set by finetune's IMAGES MASKS"):
        check_overrides(["data.root=/elsewhere"])
    with pytest.raises(ConfigError, match="--from"):
        check_overrides(["train.init_from=x.pt"])


def test_split_file_names_part_of_a_folder(tmp_path):
    make_thin_structures(tmp_path / "im", tmp_path / "gt", n=4)
    write_split_file(
        tmp_path / "s.yaml", tmp_path / "im", tmp_path / "gt", tmp_path / "depth", ["thin_003", "thin_001"]
    )
    split = find_split(tmp_path, "s.yaml:mine")
    assert split.name == "mine" and split.depth_dir("depth_large") == (tmp_path / "depth" / "depth_large").resolve()
    assert [i.name for i, _ in split.pairs()] == ["thin_001.jpg", "thin_003.jpg"]
    os.remove(tmp_path / "im" / "thin_003.jpg")
    with pytest.raises(DatasetError, match="thin_003"):
        split.image_files()


# ---------------------------------------------------------------------------------------------- memory


def _gradients(model, image, depth, mask):
    torch.manual_seed(3)  # dropout and drop path draw the same in both
    loss = pdfnet_loss(model(image, depth), mask, depth)["total"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_activations_give_the_same_gradients(tiny_config):
    model = build_pdfnet(tiny_config).train()
    checkpointed = checkpoint_activations(copy.deepcopy(model))
    gen = torch.Generator().manual_seed(0)
    image, depth = torch.randn(2, 3, 256, 256, generator=gen), torch.rand(2, 1, 256, 256, generator=gen)
    mask = (torch.rand(2, 1, 256, 256, generator=gen) > 0.7).float()
    calls = []
    # a layer inside the first Swin block (the recomputation calls the block's forward, and so its layers, again)
    checkpointed.encoder.layers[0].blocks[0].norm1.register_forward_pre_hook(lambda *_: calls.append(1))
    loss, grads = _gradients(model, image, depth, mask)
    loss_c, grads_c = _gradients(checkpointed, image, depth, mask)
    assert loss == pytest.approx(loss_c, abs=1e-6) and grads.keys() == grads_c.keys() and len(grads) > 300
    assert max((grads[k] - grads_c[k]).abs().max().item() for k in grads) <= 1e-6
    # the first Swin block ran again in the backward pass: twice for each of the two encoder calls
    assert len(calls) == 4
    # at inference (eval mode, no gradients) nothing is recomputed and the outputs are the network's
    calls.clear()
    model.eval()
    checkpointed.eval()
    with torch.no_grad():
        plain, recomputed = model(image, depth).logits[0], checkpointed(image, depth).logits[0]
    assert torch.equal(plain, recomputed) and len(calls) == 2
    assert checkpointed.state_dict().keys() == model.state_dict().keys()
    assert is_checkpointing(copy.deepcopy(checkpointed)) and not is_checkpointing(checkpoint_activations(model, False))


def test_deep_copy_recomputes_itself(tiny_config):
    model = checkpoint_activations(build_pdfnet(tiny_config))
    twin = copy.deepcopy(model)
    for (_, mine, method), (_, its, _) in zip(checkpointed_parts(model), checkpointed_parts(twin)):
        assert getattr(its, method).__self__ is its and getattr(mine, method).__self__ is mine


def test_frozen_encoder_is_left_out_and_unchanged():
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["train.freeze=encoder", "train.checkpoint_activations=true"])
    model = build_training_model(cfg, Runtime(torch.device("cpu"))).train()
    optimizer = build_optimizer(model, cfg)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in model.encoder.parameters())
    assert all(id(p) in optimized for n, p in model.named_parameters() if not n.startswith("encoder."))
    encoder = copy.deepcopy(model.encoder.state_dict())
    decoder = copy.deepcopy(model.decoder.state_dict())
    image, depth = torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256)
    pdfnet_loss(model(image, depth), (depth > 0.5).float(), depth)["total"].backward()
    optimizer.step()
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder.items())


# -------------------------------------------------------------------------------------------- the command


def test_finetune_end_to_end_with_a_depth_model(tmp_path, start, tiny_depth_model, capfd):
    images, masks = tmp_path / "photos", tmp_path / "labels"
    make_thin_structures(images, masks, n=5)
    out = tmp_path / "runs" / "mine"
    args = [str(images), str(masks), "--out", str(out), "--from", str(start), "--depth-models"]
    args += [f"large={tiny_depth_model}", *FAST, "train.epochs=1"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "train: 4 images, validation: 1 images (held out at random, seed 0" in result.stderr
    assert "depth maps: 9 made" in result.stderr  # 5 at 518 pixels, the 4 training images' targets at 1024
    cache = tmp_path / DEPTH_CACHE / "photos"
    assert sorted(p.name for p in cache.iterdir()) == ["depth_large", "depth_large_1024"]
    assert sorted(os.listdir(images)) == [f"thin_{i:03d}.jpg" for i in range(5)]  # nothing beside the photos
    record = json.loads((out / "finetune.json").read_text())
    assert record["split"] == {"train": 4, "val": 1} and set(record["before"]) == {"maxFm", "wFm", "MAE", "HCE", "n"}
    assert record["after"]["epoch"] == 1
    assert "| before (starting weights) |" in result.stdout and "| after (best.pt, epoch 1) |" in result.stdout
    assert f"pdfnet predict PHOTOS --weights {out / 'best.pt'} --depth-model {tiny_depth_model}" in result.stdout
    assert (out / "results.md").read_text() in result.stdout
    assert len(os.listdir(out / "val" / "before")) == len(os.listdir(out / "val" / "after")) == 1
    # best.pt is a checkpoint predict takes; the run's config trains again with train.py
    load_pdfnet(out / "best.pt")
    assert load_config(out / "config.yaml").data.train_sets == ("train.yaml:train",)
    # a second run on the same photos makes no depth map, and loads no depth model (this one does not exist)
    # (the maps record the model that made them: those of another model are used and reported)
    again = FinetuneSetup(images, masks, tmp_path / "runs" / "two", start=str(start), depth_models=("large=/no/such",))
    finetune(again, [*FAST, "train.epochs=1"])
    assert sorted(os.listdir(cache / "depth_large")) == [f"thin_{i:03d}.png" for i in range(5)]
    noted = capfd.readouterr().err
    assert re.search(r"depth_large: 5 depth maps were made with other options: model=.* \(now /no/such\)", noted)
    assert "used as they are; delete that folder to have its maps made again" in noted


def test_flags_and_depth_models_are_checked_before_any_work(tmp_path, start):
    images, masks = tmp_path / "photos", tmp_path / "masks"
    make_thin_structures(images, masks, n=3)
    out = tmp_path / "runs" / "mine"
    args = [str(images), str(masks), "--out", str(out), "--from", str(start)]
    for extra, expected in (
        (["--depth-models", "large=/no/such/model"], "no depth model folder /no/such/model"),
        (["train.epoch=3"], "unknown config key 'train.epoch'"),
        (["train.epochs=x"], "train.epochs: expected an integer"),
        (["data.root=elsewhere"], "data.root is set by finetune's IMAGES MASKS"),
    ):
        result = run_cli(*args, *extra)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    os.remove(masks / "thin_000.png")  # the flags come first: they are checked in no time
    result = run_cli(str(images), str(masks), "--out", str(out), "--from", "nope.pt")
    assert result.returncode == 1 and "--from nope.pt: no such file" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / DEPTH_CACHE).exists()


def test_offline_published_weights_fail_at_once(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "gt"
    make_thin_structures(images, masks, n=3)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = run_cli(str(images), str(masks), "--out", str(tmp_path / "out"), "--from", "base", env=env)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "PDFNet_Best.pth" in result.stderr and "--from PATH" in result.stderr
    # the Swin-B encoder's ImageNet weights likewise (none in checkpoints/ of the repository)
    result = run_cli(str(images), str(masks), "--out", str(tmp_path / "out"), "--from", "imagenet", env=env)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "timm/swin_base_patch4_window12_384" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert "checkpoints/swin_base_patch4_window12_384_22kto1k.pth" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / DEPTH_CACHE).exists()


def test_start_weights(tmp_path, start, tiny_official_checkpoint, monkeypatch):
    ours = resolve_start(str(start))
    assert ours.init_from == str(start) and ours.backbone is None
    assert ours.model == ModelConfig(**TINY_ARCH)  # the architecture of the file, not the recipe's Swin-B
    theirs = resolve_start(tiny_official_checkpoint)
    assert theirs.model.variant == "release" and theirs.model.depth_head and theirs.model.embed_dim == 16
    swin = tmp_path / "swin.pth"
    swin.write_bytes(b"weights")
    monkeypatch.setattr("pdfnet.model.backbone.LOCAL_SWIN_B", str(swin))  # Microsoft's file in checkpoints/
    imagenet = resolve_start("imagenet")
    assert (imagenet.init_from, imagenet.backbone, imagenet.model) == (None, str(swin), ModelConfig())
    with pytest.raises(CheckpointError, match="--from nope.pt: no such file; expected base, general, imagenet"):
        resolve_start("nope.pt")
    with pytest.raises(CheckpointError, match="not a PDFNet checkpoint"):
        resolve_start(str(_save(tmp_path / "other.pt", {"weight": torch.zeros(2)})))


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_continues_exactly_and_refuses_other_data(tmp_path, start):
    images, masks = tmp_path / "im", tmp_path / "gt"
    make_thin_structures(images, masks, n=4)
    luminance_depth(images)

    def setup(out: str) -> FinetuneSetup:
        return FinetuneSetup(images, masks, tmp_path / out, start=str(start), depth_models=("large",))

    straight = finetune(setup("straight"), [*FAST, "train.epochs=2"])
    finetune(setup("resumed"), [*FAST, "train.epochs=1"])
    with pytest.raises(OutputError, match="already holds a run"):  # the same command again: one run per folder
        finetune(setup("resumed"), [*FAST, "train.epochs=2"])
    resumed = finetune(setup("resumed"), [*FAST, "train.epochs=2"], resume="auto")
    for name in ("last.pt", "best.pt"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "resumed" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # (scores agree to float rounding: the metrics sum in BLAS and OpenCV threads)
    assert resumed["before"] == pytest.approx(straight["before"]) and resumed["after"] == pytest.approx(
        straight["after"]
    )
    # train.py goes on with the run's config (its splits are split files)
    cfg = load_config(tmp_path / "resumed" / "config.yaml", ["train.epochs=3"])
    assert [r["epoch"] for r in train(cfg, resume="auto")] == [3]
    other = tmp_path / "other"
    make_thin_structures(other / "im", other / "gt", n=3)
    moved = FinetuneSetup(other / "im", other / "gt", tmp_path / "resumed", start=str(start), depth_models=("large",))
    with pytest.raises(ConfigError, match="IMAGES: .* -> "):
        finetune(moved, [*FAST, "train.epochs=3"], resume="auto")


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, start):
    import signal
    import time

    images, masks = tmp_path / "im", tmp_path / "gt"
    make_thin_structures(images, masks, n=8)
    luminance_depth(images)
    args = [str(images), str(masks), "--from", str(start), "--depth-models", "large", *FAST, "train.epochs=3"]
    whole = run_cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    command = [sys.executable, "-m", "pdfnet", "finetune", *args, "--out", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / "last.pt").exists() and process.poll() is None:  # Ctrl+C once the first epoch is saved
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "--resume auto" in stderr and "Traceback" not in stderr, stderr
    resumed = run_cli(*args, "--out", str(out), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    for name in ("last.pt", "best.pt"):
        a, b = _weights(tmp_path / "whole" / name), _weights(out / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "finetune.json").read_text())["after"] == pytest.approx(
        json.loads((tmp_path / "whole" / "finetune.json").read_text())["after"]
    )


# ------------------------------------------------------------------------------------------------ learning


def _learn(tmp_path: Path, start: Path, n_train: int, n_val: int, epochs: int) -> dict:
    """Fine-tune the random tiny network on thin structures (a validation split of other photos)."""
    make_thin_structures(tmp_path / "im", tmp_path / "gt", n=n_train, seed=0)
    make_thin_structures(tmp_path / "vim", tmp_path / "vgt", n=n_val, seed=1, start=100)
    luminance_depth(tmp_path / "im")
    luminance_depth(tmp_path / "vim")
    val = (tmp_path / "vim", tmp_path / "vgt")
    setup = FinetuneSetup(
        tmp_path / "im", tmp_path / "gt", tmp_path / "out", val, start=str(start), depth_models=("large",)
    )
    return finetune(setup, [*FAST, f"train.epochs={epochs}"])


def test_a_short_finetune_learns_thin_structures(tmp_path, start):
    # measured (2-core Zen 4): maxFm 0.080 -> 0.709, wFm 0.052 -> 0.530, MAE 0.681 -> 0.052, HCE 94.5 -> 20.0
    record = _learn(tmp_path, start, n_train=16, n_val=4, epochs=2)
    before, after = record["before"], record["after"]
    print(f"\nbefore {before}\nafter {after}")
    assert after["maxFm"] >= before["maxFm"] + 0.3 and after["wFm"] >= before["wFm"] + 0.2
    assert after["MAE"] < before["MAE"] / 2


@pytest.mark.slow
def test_a_longer_finetune_learns_thin_structures(tmp_path, start):
    record = _learn(tmp_path, start, n_train=32, n_val=8, epochs=8)
    before, after = record["before"], record["after"]
    print(f"\nbefore {before}\nafter {after}")
    assert after["maxFm"] >= before["maxFm"] + 0.5 and after["HCE"] < before["HCE"] / 2
