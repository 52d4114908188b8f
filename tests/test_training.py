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
from pdfnet.data.dataset import DIS5KDataset, EpochSampler, augment_sample, collate
from pdfnet.io import ImageReadError
from pdfnet.training.engine import NonFiniteLossError, train
from pdfnet.training.schedule import lr_for_epoch

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


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path):
    from pdfnet.config import load_config
    from pdfnet.training.engine import train

    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR", "DIS-VD"), n=1)  # no depth maps
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"data.root={root}", f"output_dir={tmp_path / 'runs' / 'a'}"])
    with pytest.raises(FileNotFoundError, match="prepare_depth.py"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


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
    assert {lr_for_epoch(e, paper) for e in range(100)} == {1e-5}


def test_learning_rate_follows_timms_scheduler_one_epoch_behind():
    """The original builds timm's scheduler with create_scheduler(args) and calls step(epoch) after each epoch:
    epoch e trains with the scheduler's value at e - 1 (epoch 0 with its initial rate)."""
    from types import SimpleNamespace

    from timm.scheduler import create_scheduler

    for warmup in (0, 3):
        cfg = load_config(
            None, ["optim.lr=1e-3", "optim.min_lr=1e-5", f"optim.warmup_epochs={warmup}", "optim.warmup_lr=1e-4"]
        )
        cfg = load_config(None, ["train.epochs=12"], base=cfg)
        args = SimpleNamespace(
            sched="cosine",
            epochs=12,
            lr=1e-3,
            warmup_lr=1e-4,
            min_lr=1e-5,
            warmup_epochs=warmup,
            decay_epochs=300,
            cooldown_epochs=0,
            patience_epochs=10,
            decay_rate=0.1,
        )
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler, _ = create_scheduler(args, optimizer)
        trained_with = []
        for epoch in range(12):  # the original's loop: train, then step
            trained_with.append(optimizer.param_groups[0]["lr"])
            scheduler.step(epoch)
        assert [lr_for_epoch(e, cfg) for e in range(12)] == trained_with
        assert len(set(trained_with)) > 5  # a schedule that changes


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("train.epochs=two", "train.epochs: expected an integer"),
        ("train.epochs=0", "train.epochs: expected at least 1, got 0"),
        ("train.accumulation=0", "train.accumulation: expected at least 1"),
        ("train.precision=fp64", "train.precision: expected one of fp32, fp16, bf16, got 'fp64'"),
        ("model.variant=v2", "model.variant: expected one of cvpr, release"),
        ("data.augment=yes", "data.augment: expected true or false, got 'yes'"),
        ("train.validate=on", "train.validate: expected true or false, got 'on'"),
        ("data.input_size=300", "data.input_size: expected a multiple of 256"),
        ("optim.lr=-1", "optim.lr: expected a positive number"),
        ("data.num_workers=-2", "data.num_workers: expected 0 or more"),
        ("model.init_from=x.pth", "model.init_from is now train.init_from"),
        ("train.epochs=[1,", "override 'train.epochs=\\[1,'.*: not valid YAML"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])
    result = run_train("--config", str(TINY), override)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  variant: cvpr\n train:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line 3"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")


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
    assert {"model", "optimizer", "scaler", "epoch", "best_metric", "config"} <= set(a)
    assert not {"rng", "scheduler"} & set(a)  # nothing stored that is never read
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
    from pdfnet.distributed import setup_runtime
    from pdfnet.training.engine import build_training_model

    initial = build_training_model(load_config(TINY, [a for a in common[2:]]), setup_runtime("cpu")).state_dict()
    assert max((one[k] - initial[k]).abs().max().item() for k in one) > 1e-2  # the step moved the weights
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-6


def test_loss_falls_on_a_few_images(toy, tmp_path):
    cfg = tiny_config(toy, tmp_path, "train.epochs=6", "data.augment=false", "train.validate=false")
    records = train(cfg)
    losses = [r["train"]["total"] for r in records]
    assert losses[-1] < 0.8 * losses[0], losses


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    import pdfnet.training.engine as engine

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
    from pdfnet.distributed import setup_runtime
    from pdfnet.training.engine import build_training_model

    cfg = tiny_config(toy, tmp_path, f"train.init_from={tiny_official_checkpoint}", "model.variant=cvpr")
    model = build_training_model(cfg, setup_runtime("cpu"))
    reference = load_pdfnet(tiny_official_checkpoint).state_dict()
    assert torch.equal(model.state_dict()["decoder.heads.0.weight"], reference["decoder.heads.0.weight"])
    assert model.state_dict()["depth_decoder.shallow.weight"].shape[1] == 6  # cvpr's, fresh


# ------------------------------------------------------------------------------------------ the run folder


def test_a_finished_run_is_never_overwritten(toy, tmp_path):
    common = ["--config", str(TINY), f"data.root={toy}", f"output_dir={tmp_path}", "train.validate=false"]
    assert run_train(*common, "train.epochs=1").returncode == 0
    best = (tmp_path / "best.pt").read_bytes()
    again = run_train(*common, "train.epochs=1")
    assert again.returncode == 1 and "--resume auto" in again.stderr and "fresh output_dir" in again.stderr
    assert (tmp_path / "best.pt").read_bytes() == best
    # settings that change results are refused on resume, naming them; harmless ones are logged
    changed = run_train(*common, "train.epochs=2", "optim.lr=0.5", "--resume", "auto")
    assert changed.returncode == 1 and "optim.lr: 0.001 -> 0.5" in changed.stderr
    # overrides anywhere, also after --resume; without --config the stored settings are the base
    resumed = run_train(f"output_dir={tmp_path}", "--resume", "auto", "train.epochs=2", "data.num_workers=0")
    assert resumed.returncode == 0, resumed.stderr
    assert "train.epochs 1 -> 2" in resumed.stdout
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2


def test_two_trainings_in_one_folder_at_once_are_refused(toy, tmp_path):
    from pdfnet.errors import OutputError
    from pdfnet.io import FolderLock

    with FolderLock(tmp_path, "training"):
        with pytest.raises(OutputError, match="in use by another training run"):
            train(tiny_config(toy, tmp_path, "train.validate=false"))


def test_a_kill_between_writes_leaves_a_consistent_run(toy, tmp_path, monkeypatch):
    import pdfnet.training.checkpointing as ckpt

    cfg = tiny_config(toy, tmp_path, "train.epochs=2")
    real = ckpt.save_checkpoint

    def killed_at_last_of_epoch_2(state, path):
        if path.name == "last.pt" and state["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies after best.pt, before last.pt
        real(state, path)

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_at_last_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert last["epoch"] == 1 and [r["epoch"] for r in lines][: best["epoch"]] == list(range(1, best["epoch"] + 1))
    assert best["best_metric"] == max(r["val"]["maxFm"] for r in lines[: best["epoch"]])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind
    monkeypatch.setattr(ckpt, "save_checkpoint", real)
    records = train(cfg, resume="auto")  # resuming recomputes epoch 2; metrics are not duplicated
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [2] and [r["epoch"] for r in lines] == [1, 2]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["best_metric"] == max(r["val"]["maxFm"] for r in lines)
