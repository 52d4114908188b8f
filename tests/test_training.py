"""Training: the DIS-5K reader, augmentations, config, checkpoints, exact resume, DDP and a tiny run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_FOLDERS, make_toy_dis5k

from pdfnet import load_pdfnet
from pdfnet.config import Config, ConfigError, load_config
from pdfnet.data import DIS5KDataset, EpochSampler, augment_sample, collate
from pdfnet.engine import NonFiniteLossError, lr_at, train
from pdfnet.io import ImageReadError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_dis5k(tmp_path_factory.mktemp("dis5k"), n=4, depths=DEPTH_FOLDERS)


def tiny_config(root: Path, out: Path, *overrides: str) -> Config:
    return load_config(TINY, [f"data.root={root}", f"output_dir={out}", *overrides])


def run_train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


# ---------------------------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("layout", [("images", "masks"), ("im", "gt")])
def test_reader_layouts(tmp_path, layout):
    root = make_toy_dis5k(tmp_path, splits=("DIS-TR",), n=2, layout=layout, depths=DEPTH_FOLDERS)
    dataset = DIS5KDataset(root, "DIS-TR", 256, ("depth_small", "depth_base", "depth_large"), "depth_large_1024")
    sample = dataset[(0, 1)]
    assert sample["image"].shape == (3, 256, 256) and sample["mask"].shape == (1, 256, 256)
    assert sample["depth"].shape == (1, 256, 256) and sample["depth_target"].shape == (1, 256, 256)
    assert set(sample["mask"].unique().tolist()) == {0.0, 1.0}  # nearest resizing keeps the mask binary
    assert sample["name"] == "DIS-TR_1" and sample["size"].tolist() == [112, 120]
    batch = collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["name"] == ["DIS-TR_0", "DIS-TR_1"]


def test_depth_choice_covers_all_three_models(toy):
    dataset = DIS5KDataset(toy, "DIS-TR", 256, ("depth_small", "depth_base", "depth_large"), "depth_large_1024")
    # make the three folders distinguishable: constant maps of different levels for sample 0
    from PIL import Image

    for level, folder in zip((10, 20, 30), ("depth_small", "depth_base", "depth_large")):
        Image.fromarray(np.full((96, 128), level, np.uint8)).save(toy / "DIS-TR" / folder / "DIS-TR_0.png")
    seen = {round(float(dataset[(epoch, 0)]["depth"].mean()) * 255) for epoch in range(30)}
    assert seen == {10, 20, 30}
    assert torch.equal(dataset[(3, 0)]["depth"], dataset[(3, 0)]["depth"])  # (epoch, index) fixes the choice


def test_missing_depth_names_file_and_command(tmp_path):
    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=2, depths=("depth_large",))
    os.remove(root / "DIS-VD" / "depth_large" / "DIS-VD_1.png")
    with pytest.raises(FileNotFoundError, match=r"DIS-VD_1\.jpg.*prepare_depth\.py .*--out-name depth_large"):
        DIS5KDataset(root, "DIS-VD", 256, ("depth_large",))


def test_missing_mask_and_unreadable_image_are_named(tmp_path):
    root = make_toy_dis5k(tmp_path, splits=("DIS-VD",), n=2, depths=("depth_large",))
    (root / "DIS-VD" / "images" / "DIS-VD_1.jpg").write_bytes(b"broken")
    dataset = DIS5KDataset(root, "DIS-VD", 256, ("depth_large",))
    with pytest.raises(ImageReadError, match="DIS-VD_1.jpg"):
        dataset[1]
    os.remove(root / "DIS-VD" / "masks" / "DIS-VD_0.png")
    with pytest.raises(FileNotFoundError, match="no mask for .*DIS-VD_0.jpg"):
        DIS5KDataset(root, "DIS-VD", 256, ("depth_large",))


def test_augmentations_keep_image_mask_and_depth_aligned():
    mask = torch.zeros(1, 128, 128)
    mask[:, 30:90, 20:70] = 1.0
    hits = 0
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        image, m, depth, target = augment_sample(mask.repeat(3, 1, 1), mask.clone(), mask.clone(), mask.clone(), gen)
        # every geometric change moves all maps together: depth and target stay identical to the mask
        assert torch.equal(m, depth) and torch.equal(m, target)
        # the image follows too (colour changes alter its values, not where the object is)
        inside, outside = image.mean(0)[m[0] > 0.5], image.mean(0)[m[0] < 0.5]
        assert inside.mean() > outside.mean() + 0.2
        hits += int(not torch.equal(m, mask))
    assert hits > 20  # and they do change things


def test_sampler_orders_and_shards():
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    assert first == list(sampler) and sorted(i for _, i in first) == list(range(10))
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != [i for _, i in first]
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=3, rank=rank, world_size=3)
        s.set_epoch(2)
        shards.append([i for _, i in s])
    assert len({len(s) for s in shards}) == 1  # padded to equal length
    assert set(i for s in shards for i in s) == set(range(10))
    sampler.set_epoch(4, subset=[1, 5, 7])
    assert sorted(i for _, i in sampler) == [1, 5, 7]


def test_workers_make_the_same_samples(toy):
    dataset = DIS5KDataset(toy, "DIS-TR", 256, ("depth_small", "depth_base"), "depth_large_1024", augment=True)
    sampler = EpochSampler(len(dataset), seed=0)
    sampler.set_epoch(5)

    def images(workers):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=2, sampler=sampler, num_workers=workers, collate_fn=collate
        )
        return torch.cat([b["image"] for b in loader])

    assert torch.equal(images(0), images(2))


# ---------------------------------------------------------------------------------------------- the config


def test_config_files_load():
    for name in ("pdfnet_dis5k.yaml", "pdfnet_dis5k_release.yaml", "tiny.yaml"):
        load_config(ROOT / "configs" / name)
    paper = load_config(ROOT / "configs" / "pdfnet_dis5k.yaml")
    assert (paper.model.variant, paper.data.input_size, paper.train.epochs, paper.train.batch_size) == (
        "cvpr",
        1024,
        100,
        1,
    )
    assert (paper.optim.lr, paper.optim.weight_decay, paper.train.precision) == (1e-5, 1e-4, "fp16")
    assert load_config(ROOT / "configs" / "pdfnet_dis5k_release.yaml").model.variant == "release"
    # the schedule: cosine with warm-up, but lr = warm-up lr = min lr makes it constant, as the original
    assert {lr_at(e, paper) for e in range(100)} == {1e-5}
    custom = load_config(None, ["optim.lr=1e-3", "optim.min_lr=0", "optim.warmup_epochs=2", "optim.warmup_lr=0"])
    assert lr_at(0, custom) == 0 and lr_at(1, custom) == pytest.approx(5e-4) and lr_at(99, custom) < 1e-5


@pytest.mark.parametrize(
    "override, message",
    [("train.epoch=3", "unknown config key 'train.epoch'"), ("train.epochs=two", "train.epochs: expected an integer")],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])
    result = run_train("--config", str(TINY), override)
    assert result.returncode == 2 and message in result.stderr


# ------------------------------------------------------------------------------------------------- the loop


def test_train_resume_is_exact(toy, tmp_path):
    common = ["--config", str(TINY), f"data.root={toy}", "data.num_workers=2"]
    straight = run_train(*common, f"output_dir={tmp_path / 'a'}", "train.epochs=2")
    assert straight.returncode == 0, straight.stderr
    first = run_train(*common, f"output_dir={tmp_path / 'b'}", "train.epochs=1")
    assert first.returncode == 0, first.stderr
    resumed = run_train(*common, f"output_dir={tmp_path / 'b'}", "train.epochs=2", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for run in ("a", "b"):
        assert (tmp_path / run / "best.pt").exists() and (tmp_path / run / "config.yaml").exists()
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in lines] == [1, 2]
        assert {"maxFm", "MAE"} <= set(lines[0]["val"]) and {"total", "depth"} <= set(lines[0]["train"])
    # the checkpoint is a plain state dict beside everything a run needs, and loads as a model
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"} <= set(a)
    model = load_pdfnet(tmp_path / "a" / "last.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in a["model"].items())


def test_ddp_matches_one_process(tmp_path):
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR",), n=2, depths=DEPTH_FOLDERS)
    # release variant: the cvpr boundary map is thresholded, which turns float noise into different gradients.
    # eps = 1 makes AdamW's first step g / (|g| + 1), a smooth function of the gradient (with eps = 1e-8 it is
    # lr * sign(g), and noise flips the sign of near-zero gradients).
    common = [
        "--config",
        str(TINY),
        f"data.root={root}",
        "train.epochs=1",
        "train.validate=false",
        "model.variant=release",
    ]
    common += ["model.dropout=0", "model.drop_path_rate=0", "optim.eps=1.0", "optim.lr=0.1", "optim.min_lr=0.1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = run_train(*common, f"output_dir={tmp_path / 'one'}", "train.batch_size=2", env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py")]
        + common
        + [f"output_dir={tmp_path / 'two'}", "train.batch_size=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    from pdfnet.engine import build_training_model, setup_runtime

    initial = build_training_model(load_config(TINY, [a for a in common[2:]]), setup_runtime("cpu")).state_dict()
    assert max((one[k] - initial[k]).abs().max().item() for k in one) > 1e-2  # the step moved the weights
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-6


def test_loss_falls_on_a_few_images(toy, tmp_path):
    cfg = tiny_config(toy, tmp_path, "train.epochs=6", "data.augment=false", "train.validate=false")
    records = train(cfg)
    losses = [r["train"]["total"] for r in records]
    assert losses[-1] < 0.8 * losses[0], losses


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    import pdfnet.engine as engine

    cfg = tiny_config(toy, tmp_path, "train.epochs=3", "train.validate=false")
    real, calls = engine.pdfnet_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        losses = real(*args, **kwargs)
        if len(calls) > 2:  # epoch 2 (two steps per epoch)
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(engine, "pdfnet_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1"):
        train(cfg)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_hard_mining_trains_odd_epochs_on_the_hardest_half(toy, tmp_path):
    cfg = tiny_config(toy, tmp_path, "train.epochs=2", "train.validate=false", "train.hard_mining=true")
    records = train(cfg)
    assert [r["samples"] for r in records] == [4, 2]


def test_fine_tune_from_the_authors_layout(toy, tmp_path, tiny_official_checkpoint):
    # the tiny checkpoint is the release version; a cvpr model takes everything but the depth head's inputs
    from pdfnet.engine import build_training_model, setup_runtime

    cfg = tiny_config(toy, tmp_path, f"model.init_from={tiny_official_checkpoint}", "model.variant=cvpr")
    model = build_training_model(cfg, setup_runtime("cpu"))
    reference = load_pdfnet(tiny_official_checkpoint).state_dict()
    assert torch.equal(model.state_dict()["decoder.heads.0.weight"], reference["decoder.heads.0.weight"])
    assert model.state_dict()["depth_decoder.shallow.weight"].shape[1] == 6  # cvpr's, fresh
