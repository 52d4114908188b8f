"""The ablation switches: configs checked at load, each variant's network, loss and data, checkpoints refused
across switches, and every configs/ablations file trained one epoch and predicting (an RGB-only model without a
single depth map)."""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_FOLDERS, TINY_ARCH, make_toy_dis5k
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from pdfnet import CheckpointError, ModelConfig, Predictor, build_pdfnet, load_pdfnet, pdfnet_loss
from pdfnet.config import Config, ConfigError, config_changes, config_from_dict, flatten, load_config, to_dict
from pdfnet.data.dataset import SegmentationDataset, augment_sample, collate
from pdfnet.model.checkpoint import init_from_checkpoint
from pdfnet.model.fusion import FSE
from pdfnet.model.layers import resize_like
from pdfnet.provenance import read_options

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
ABLATIONS = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))

# (name, switches) of the networks the ablation files build, on the tiny architecture
VARIANTS = [
    ("rgb_only", dict(use_depth=False, depth_head=False)),
    ("no_patches", dict(use_patches=False)),
    ("no_coa", dict(use_coa=False)),
    ("grid4", dict(grid=4)),
    ("rgb_only_no_patches_no_coa", dict(use_depth=False, depth_head=False, use_patches=False, use_coa=False)),
    ("no_patches_release", dict(use_patches=False, variant="release")),
]


def tiny_model(**switches) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pdfnet(ModelConfig(**TINY_ARCH, **switches))


def save_ours(model, cfg: Config, path: Path) -> Path:
    """A checkpoint as training writes it (the weights and the run's config)."""
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, path)
    return path


def tiny_run_config(**switches) -> Config:
    settings = [f"model.{k}={str(v).lower()}" for k, v in switches.items() if k != "depth_head"]
    if switches.get("depth_head") is False:
        settings.append("model.depth_head=false")
    if switches.get("use_depth") is False:
        settings.append("loss.integrity_prior=false")
    return load_config(TINY, settings)


# ---------------------------------------------------------------------------------------------- the config


def test_switches_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"set model\.depth_head=false and loss\.integrity_prior=false"):
        load_config(None, ["model.use_depth=false"])
    with pytest.raises(ConfigError, match=r"set loss\.integrity_prior=false$"):
        load_config(None, ["model.use_depth=false", "model.depth_head=false"])
    rgb = load_config(None, ["model.use_depth=false", "model.depth_head=false", "loss.integrity_prior=false"])
    assert not rgb.model.use_depth and not rgb.loss.integrity_prior
    with pytest.raises(ConfigError, match=r"model\.grid=4 has no effect without the patch stream"):
        load_config(None, ["model.use_patches=false", "model.grid=4"])
    with pytest.raises(ConfigError, match=r"data\.input_size: expected a multiple of 512 \(32 x model\.grid\)"):
        load_config(None, ["model.grid=16", "data.input_size=768"])
    assert load_config(None, ["model.use_patches=false", "data.input_size=320"]).data.input_size == 320
    with pytest.raises(ConfigError, match=r"model\.use_coa: expected true or false, got 'no'"):
        load_config(None, ["model.use_coa=no"])
    with pytest.raises(ConfigError, match=r"unknown config key 'loss\.depth'"):
        load_config(None, ["loss.depth=false"])


def test_ablation_files_hold_only_their_differences():
    assert [p.stem for p in ABLATIONS] == [
        "grid16",
        "grid4",
        "no_coa",
        "no_depth_head",
        "no_integrity_prior",
        "no_patches",
        "rgb_only",
    ]
    recipe = load_config(ROOT / "configs" / "pdfnet_dis5k.yaml")
    for path in ABLATIONS:
        cfg = load_config(path)
        changed = {k for k, _, _ in config_changes(recipe, cfg)} - {"output_dir"}
        assert changed and all(k.startswith(("model.", "loss.")) for k in changed), (path.name, changed)
        assert cfg.output_dir == f"runs/ablations/{path.stem}"
        assert config_from_dict(to_dict(cfg)) == cfg  # stored in checkpoints and read back
    # a config stored before the switches existed reads as the paper's network
    old = to_dict(Config())
    del old["loss"]
    for key in ("use_depth", "use_patches", "use_coa"):
        del old["model"][key]
    assert config_from_dict(old) == Config()


# ----------------------------------------------------------------------------------------------- the network


@pytest.mark.parametrize("name, switches", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_forward_and_parts(name, switches):
    model = tiny_model(**switches).train()
    out = model(torch.randn(1, 3, 256, 256), torch.rand(1, 1, 256, 256))
    # every output keeps the paper's sizes: full resolution, then side outputs at 1/4 .. 1/32 and the global one
    assert [x.shape[-1] for x in out.logits] == [256, 64, 32, 16, 8, 8]
    assert [x.shape[-1] for x in out.depth_logits or []] == ([128, 32, 16, 8, 4] if model.depth_decoder else [])
    # switching off removes parts and renames none (the default's keys are the authors' checkpoints' keys)
    assert set(model.state_dict()) <= set(tiny_model().state_dict())
    # and what remains trains
    loss = sum(x.mean() for x in out.logits) + sum(x.mean() for x in out.depth_logits or [])
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert model.switches() == {k: switches.get(k, getattr(ModelConfig, k)) for k in model.switches()}


def test_rgb_only_network_reads_no_depth():
    model = tiny_model(use_depth=False, depth_head=False).eval()
    image = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        without = model(image).logits[0]
        given = model(image, torch.rand(2, 1, 256, 256)).logits[0]
    assert torch.equal(without, given)
    assert model.decoder.shallow_embed.in_channels == 3 and model.decoder.stream_mix[0].conv.in_channels == 2 * 16
    with pytest.raises(ValueError, match="takes a depth map"):
        tiny_model()(image)
    with pytest.raises(ValueError, match="needs use_depth=True"):
        tiny_model(use_depth=False)


def test_fse_without_coa_passes_its_gated_projections_on():
    torch.manual_seed(0)
    fse = FSE(8, 4, pool=1, grid=2, variant="cvpr", use_coa=False).eval()
    assert not any("_from_" in k for k in fse.state_dict())
    image, depth, patch = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 16, 16)
    prev = torch.randn(1, 1, 4, 4)
    with torch.no_grad():
        img, dep, pat = fse(image, depth, patch, prev)
        # the image stream: gated by the coarser prediction's probability, projected, nothing added
        torch.testing.assert_close(img, fse.image_proj(image * resize_like(prev.sigmoid(), image)))
    assert dep.shape == (1, 4, 8, 8) and pat.shape == (1, 4, 16, 16)


# ------------------------------------------------------------------------------------------ loss and data


def test_loss_switches():
    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    target = torch.rand(2, 1, 64, 64)
    full = tiny_model().train()(torch.randn(2, 3, 256, 256), torch.rand(2, 1, 256, 256))
    on = pdfnet_loss(full, mask, target)
    off = pdfnet_loss(full, mask, target, integrity_prior=False)
    assert on["integrity"] > 0 and off["integrity"] == 0
    assert torch.equal(off["segmentation"], on["segmentation"]) and torch.equal(off["depth"], on["depth"])
    assert torch.equal(off["total"], on["segmentation"] + on["depth"] / 10)
    # an RGB-only model's output trains without a depth target
    rgb = tiny_model(use_depth=False, depth_head=False).train()(torch.randn(2, 3, 256, 256))
    losses = pdfnet_loss(rgb, mask, None, integrity_prior=False)
    assert losses["depth"] == 0 and losses["integrity"] == 0 and torch.equal(losses["total"], losses["segmentation"])
    with pytest.raises(ValueError, match="the integrity prior need"):
        pdfnet_loss(rgb, mask, None)


def test_rgb_only_data_reads_no_depth(tmp_path):
    root = make_toy_dis5k(tmp_path, splits=("DIS-TR",), n=2)  # no depth folder at all
    dataset = SegmentationDataset(root, "DIS-TR", 256, (), augment=True)
    batch = collate([dataset[(3, 0)], dataset[(3, 1)]])
    assert "depth" not in batch and "depth_target" not in batch and batch["image"].shape == (2, 3, 256, 256)
    # the augmentations draw the same whether or not depth maps come along
    image, mask = torch.rand(3, 64, 64), (torch.rand(1, 64, 64) > 0.5).float()
    for seed in range(8):
        with_depth = augment_sample(image, mask, mask.clone(), mask.clone(), torch.Generator().manual_seed(seed))
        without = augment_sample(image, mask, None, None, torch.Generator().manual_seed(seed))
        assert torch.equal(with_depth[0], without[0]) and torch.equal(with_depth[1], without[1])
        assert without[2:] == (None, None)


# ----------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_build_their_own_variant_and_refuse_others(tmp_path, tiny_official_checkpoint):
    rgb_cfg = tiny_run_config(use_depth=False, depth_head=False)
    rgb = build_pdfnet(rgb_cfg.model).eval()
    rgb_path = save_ours(rgb, rgb_cfg, tmp_path / "rgb.pt")
    loaded = load_pdfnet(rgb_path)  # as test.py --checkpoint and predict --weights load it
    assert loaded.switches()["use_depth"] is False
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(loaded(image).logits[0], rgb(image).logits[0])
    # train.init_from into a model with other switches is refused, naming them
    with pytest.raises(
        CheckpointError,
        match=r"rgb\.pt: checkpoint was trained with model\.use_depth=false, this model has model\.use_depth=true",
    ):
        init_from_checkpoint(tiny_model(), rgb_path)
    grid4_cfg = tiny_run_config(grid=4)
    grid4_path = save_ours(build_pdfnet(grid4_cfg.model), grid4_cfg, tmp_path / "grid4.pt")
    assert load_pdfnet(grid4_path).grid == 4
    with pytest.raises(CheckpointError, match=r"model\.grid=4, this model has model\.grid=8"):
        init_from_checkpoint(tiny_model(), grid4_path)
    # the authors' checkpoints are the paper's network
    with pytest.raises(CheckpointError, match=r"model\.use_depth=true, this model has model\.use_depth=false"):
        init_from_checkpoint(tiny_model(use_depth=False, depth_head=False), tiny_official_checkpoint)
    # the depth head may differ: it is training-only (fresh, or left out)
    loaded_names, fresh = init_from_checkpoint(
        tiny_model(depth_head=False), save_ours(tiny_model(), load_config(TINY), tmp_path / "full.pt")
    )
    assert fresh == [] and not any(k.startswith("depth_decoder.") for k in loaded_names)


def test_bare_state_dicts_show_their_switches(tmp_path):
    model = tiny_model(use_coa=False, use_patches=False).eval()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    loaded = load_pdfnet(tmp_path / "bare.pt")
    assert loaded.switches() == dict(model.switches())
    # a stored config that contradicts the weights is named
    cfg = load_config(TINY)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, tmp_path / "contradicts.pt")
    with pytest.raises(CheckpointError, match=r"model\.use_patches=false, model\.use_coa=false, which its stored"):
        load_pdfnet(tmp_path / "contradicts.pt")


def test_rgb_only_predictor_loads_and_runs_no_depth_model(tmp_path):
    cfg = tiny_run_config(use_depth=False, depth_head=False)
    path = save_ours(build_pdfnet(cfg.model), cfg, tmp_path / "rgb.pt")
    # a depth model that does not exist: an RGB-only checkpoint never loads one
    predictor = Predictor.from_checkpoint(path, device="cpu", depth_model=str(tmp_path / "nowhere"), input_size=256)
    assert predictor.depth_estimator is None and not predictor.uses_depth
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    mask = predictor.predict_mask(image)
    assert mask.shape == (90, 120) and mask.dtype == np.uint8
    assert np.array_equal(predictor.predict_mask(image, np.zeros((1, 1), np.uint8)), mask)  # depth is not read
    tta = Predictor(load_pdfnet(path), None, device="cpu", input_size=256, tta=True)
    assert tta.predict_mask(image).shape == (90, 120)


# ------------------------------------------------------------------- one epoch from train.py, then predicting


def tiny_overrides(size: int) -> list[str]:
    """configs/tiny.yaml's settings as key=value overrides (train.py takes one --config: the ablation's)."""
    settings = flatten(load_config(TINY))
    tiny = {k: v for k, v in settings.items() if flatten(Config())[k] != v and k not in ("data.root", "output_dir")}
    tiny.update({"data.input_size": size, "train.epochs": 1, "train.pretrained_backbone": None})
    return [
        f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}".replace(" ", "")
        for k, v in tiny.items()
    ]


def train_and_predict(config: Path, root: Path, out: Path, depth_model: str) -> Path:
    size = 512 if config.stem == "grid16" else 256
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config), *tiny_overrides(size)]
    command += [f"data.root={root}", f"output_dir={out / 'run'}"]
    trained = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert trained.returncode == 0, trained.stderr
    photo = root / "DIS-VD" / "images" / "DIS-VD_0.jpg"
    predict = [sys.executable, "-m", "pdfnet", "predict", str(photo), "--weights", str(out / "run" / "last.pt")]
    predict += ["--depth-model", depth_model, "--format", "mask", "--out", str(out / "pred"), "--device", "cpu"]
    predict += ["--input-size", str(size)]
    predicted = subprocess.run(predict, capture_output=True, text=True, cwd=ROOT)
    assert predicted.returncode == 0, predicted.stderr
    mask = np.asarray(Image.open(out / "pred" / "DIS-VD_0.png"))
    assert mask.shape == np.asarray(Image.open(photo)).shape[:2] and mask.dtype == np.uint8
    return out / "run" / "last.pt"


def test_rgb_only_trains_tests_and_predicts_without_any_depth_map(tmp_path):
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR", "DIS-VD"), n=2)  # no depth folder anywhere
    config = ROOT / "configs" / "ablations" / "rgb_only.yaml"
    checkpoint = train_and_predict(config, root, tmp_path, depth_model=str(tmp_path / "no-depth-model"))
    assert load_pdfnet(checkpoint).switches()["use_depth"] is False
    test = [sys.executable, str(ROOT / "test.py"), "--checkpoint", str(checkpoint), "--data-root", str(root)]
    test += ["--splits", "DIS-VD", "--out", str(tmp_path / "test"), "--input-size", "256", "--device", "cpu"]
    test += ["--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    tested = subprocess.run(test, capture_output=True, text=True, cwd=ROOT)
    assert tested.returncode == 0, tested.stderr
    assert "| DIS-VD |" in (tmp_path / "test" / "results.md").read_text()
    # the outputs record that no depth was read (a rerun compares these records)
    for made in (tmp_path / "pred" / "DIS-VD_0.png", *(tmp_path / "test" / "preds" / "DIS-VD").glob("*.png")):
        assert read_options(made)["depth"] == "none (RGB-only)", made
    predict = [sys.executable, "-m", "pdfnet", "predict", str(root / "DIS-VD" / "images" / "DIS-VD_0.jpg")]
    predict += ["--weights", str(checkpoint), "--format", "mask", "--out", str(tmp_path / "pred")]
    predict += ["--input-size", "256", "--depth-model", str(tmp_path / "no-depth-model")]
    again = subprocess.run(predict, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "already exist" in again.stdout, again.stderr


@pytest.mark.parametrize("config", ABLATIONS, ids=lambda p: p.stem)
def test_every_ablation_takes_a_training_step_and_its_checkpoint_predicts(config, tmp_path):
    """The fast sibling of the one-epoch test below: each file's network, data and loss, through the engine's
    own training loop for one step on the tiny architecture, then its checkpoint predicting."""
    from pdfnet.distributed import Runtime
    from pdfnet.training.checkpointing import save_checkpoint
    from pdfnet.training.engine import build_loader, build_training_model, train_one_epoch

    cfg = load_config(config, tiny_overrides(512 if config.stem == "grid16" else 256))
    depths = DEPTH_FOLDERS if cfg.model.use_depth else ()  # an RGB-only run has none to find
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR",), n=2, depths=depths)
    cfg = config_from_dict({**to_dict(cfg), "data": {**to_dict(cfg)["data"], "root": str(root)}})
    rt = Runtime(torch.device("cpu"))
    model = build_training_model(cfg, rt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = build_loader(cfg, rt, ["DIS-TR"], train=True)
    batch = next(iter(loader))
    assert ("depth" in batch) == cfg.model.use_depth
    assert ("depth_target" in batch) == (cfg.loss.integrity_prior or cfg.model.depth_head)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    totals, _ = train_one_epoch(model, loader, optimizer, scaler, cfg, rt, 0, None)
    assert (totals["integrity"] > 0) == cfg.loss.integrity_prior and (totals["depth"] > 0) == cfg.model.depth_head
    assert not torch.equal(model.decoder.stream_mix[0].conv.weight, before["decoder.stream_mix.0.conv.weight"])
    path = tmp_path / "last.pt"
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, path)
    predictor = Predictor.from_checkpoint(path, device="cpu", depth_model=None, input_size=cfg.data.input_size)
    assert predictor.model.switches() == {k: getattr(cfg.model, k) for k in predictor.model.switches()}
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    depth = None if not cfg.model.use_depth else np.full((60, 80), 128, np.uint8)
    assert predictor.predict_mask(image, depth).shape == (60, 80)


@pytest.mark.slow
@pytest.mark.parametrize("config", [p for p in ABLATIONS if p.stem != "rgb_only"], ids=lambda p: p.stem)
def test_every_ablation_trains_one_epoch_and_predicts(config, tmp_path, tiny_depth_model):
    root = make_toy_dis5k(tmp_path / "data", splits=("DIS-TR", "DIS-VD"), n=2, depths=DEPTH_FOLDERS)
    checkpoint = train_and_predict(config, root, tmp_path, depth_model=tiny_depth_model)
    stored = load_config(config, tiny_overrides(512 if config.stem == "grid16" else 256))
    assert load_pdfnet(checkpoint).switches() == {
        k: getattr(stored.model, k) for k in ("use_depth", "use_patches", "use_coa", "grid")
    }


def test_ablation_table_script_counts_what_runs():
    """The table's FLOPs, counted on the meta device, are those of a real forward pass (attention included: on
    the CPU's fused kernel the counter would miss it); and its rows differ as the parts removed say."""
    script = runpy.run_path(str(ROOT / "scripts" / "ablation_table.py"))
    forward_flops, table_rows = script["forward_flops"], script["table_rows"]

    model = tiny_model(use_patches=False).eval()
    real = forward_flops(model, 256, "cpu")
    assert forward_flops(model.to("meta"), 256, "meta") == real
    # the CoA attention of the finest FSE, by hand: 1024 image queries x 256 pooled depth keys x 16 channels,
    # a multiply-add per product of Q K^T and of the weights with V, 2 FLOPs each
    with FlopCounterMode(display=False) as counter:
        forward_flops(model, 256, "meta")
    by_module = counter.get_flop_counts()
    coa = by_module["PDFNet.decoder.fse.3.image_from_depth"]
    assert coa[torch.ops.aten.bmm] == 2 * 2 * 1024 * 256 * 16
    rows = {Path(r["config"]).stem: r for r in table_rows(str(TINY), 512, ABLATIONS)}
    full = rows["tiny"]
    assert rows["rgb_only"]["params_predict"] < full["params_predict"]
    assert rows["no_patches"]["gflops_predict"] < 0.7 * full["gflops_predict"]
    assert (
        rows["no_depth_head"]["params_train"] == full["params_predict"] == rows["no_integrity_prior"]["params_predict"]
    )
    assert (
        rows["grid4"]["params_train"] == full["params_train"]
        and rows["grid4"]["gflops_predict"] != full["gflops_predict"]
    )


def test_rgb_only_server_loads_no_depth_model(tmp_path):
    from pdfnet.app.models import ModelCache

    cfg = tiny_run_config(use_depth=False, depth_head=False)
    path = save_ours(build_pdfnet(cfg.model), cfg, tmp_path / "rgb.pt")
    # a depth model that cannot be had: the server's start (preload) would fail if it were loaded
    models = ModelCache(str(path), str(tmp_path / "nowhere"), "cpu", input_size=256)
    models.preload()
    predictor = models.predictor()
    assert predictor.depth_estimator is None and not predictor.uses_depth
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert predictor.predict_mask(image).shape == (40, 50)
