"""Other datasets: every download's folder layout found by name, depth maps beside each split, training on several
sets at once (exactly resumable), test.py over SOD sets, and the messages for what is missing."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_FOLDERS
from PIL import Image

from pdfnet.config import ConfigError, config_from_dict, load_config, to_dict
from pdfnet.data.dataset import EpochSampler, SegmentationDataset
from pdfnet.data.depth import prepare_depth_maps
from pdfnet.data.layout import KNOWN_SPLITS, SplitNotFoundError, find_split
from pdfnet.errors import DatasetError
from pdfnet.evaluation import testing
from pdfnet.training.engine import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def make_split(
    root: Path,
    images: str,
    masks: str,
    depth_base: str | None = None,
    stems=("a", "b"),
    suffix: str = ".jpg",
    depths: tuple[str, ...] = (),
) -> None:
    """Tiny photos (a bright square on noise) in ``root/images``, PNG masks in ``root/masks`` and depth maps in
    ``root/depth_base/<folder>`` for every folder in ``depths``."""
    rng = np.random.default_rng(len(images))
    for i, stem in enumerate(stems):
        H, W = 40 + 8 * i, 48
        mask = np.zeros((H, W), np.uint8)
        mask[10:30, 12:36] = 255
        image = rng.integers(0, 100, (H, W, 3), dtype=np.uint8)
        image[mask > 0] = (230, 190, 40)
        for folder, array, name in ((images, image, stem + suffix), (masks, mask, stem + ".png")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / name)
        for depth in depths:
            (root / depth_base / depth).mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask // 2 + rng.integers(0, 60, (H, W))).astype(np.uint8)).save(
                root / depth_base / depth / f"{stem}.png"
            )


# (split, image folder, mask folder, depth base): the official downloads and the common re-packagings, under a
# data root holding one folder per dataset
LAYOUTS = [
    ("DIS-TR", "DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt", "DIS5K/DIS-TR"),  # the DIS-5K download
    ("DIS-VD", "DIS-VD/images", "DIS-VD/masks", "DIS-VD"),  # the PDFNet release, root = the DIS-5K folder
    ("HRSOD-TR", "HRSOD/HRSOD_train", "HRSOD/HRSOD_train_mask", "HRSOD/HRSOD_train_depth"),
    ("HRSOD-TE", "HRSOD_release/HRSOD_test", "HRSOD_release/HRSOD_test_mask", "HRSOD_release/HRSOD_test_depth"),
    ("HRSOD-TE", "HRSOD/HRSOD_test/images", "HRSOD/HRSOD_test/masks", "HRSOD/HRSOD_test"),  # the authors' code
    ("UHRSD-TR", "UHRSD/UHRSD_TR_2K/image", "UHRSD/UHRSD_TR_2K/mask", "UHRSD/UHRSD_TR_2K"),
    ("UHRSD-TE", "UHRSD/UHRSD_TE_2K/image", "UHRSD/UHRSD_TE_2K/mask", "UHRSD/UHRSD_TE_2K"),
    ("DUTS-TR", "DUTS/DUTS-TR/DUTS-TR-Image", "DUTS/DUTS-TR/DUTS-TR-Mask", "DUTS/DUTS-TR"),
    ("DUTS-TE", "DUTS/DUTS-TE/DUTS-TE-Image", "DUTS/DUTS-TE/DUTS-TE-Mask", "DUTS/DUTS-TE"),
    ("DUTS-TE", "DUTS-TE/Imgs", "DUTS-TE/GT", "DUTS-TE"),
    ("DUT-OMRON", "DUT-OMRON/DUT-OMRON-image", "DUT-OMRON/pixelwiseGT-new-PNG", "DUT-OMRON"),
    ("HKU-IS", "HKU-IS/imgs", "HKU-IS/gt", "HKU-IS"),
    ("ECSSD", "ECSSD/images", "ECSSD/ground_truth_mask", "ECSSD"),
    ("ECSSD", "ECSSD/Image", "ECSSD/Mask", "ECSSD"),
    ("PASCAL-S", "PASCAL-S/datasets/imgs/pascal", "PASCAL-S/datasets/masks/pascal", "PASCAL-S"),
    ("PASCAL-S", "salObj/datasets/imgs/pascal", "salObj/datasets/masks/pascal", "salObj"),
    ("mine/photos:mine", "mine/photos/images", "mine/photos/masks", "mine/photos"),  # a folder of one's own
    ("extra:mine", "extra/mine/im", "extra/mine/gt", "extra/mine"),
]


@pytest.mark.parametrize("spec, images, masks, depth_base", LAYOUTS, ids=[f"{s}:{i}" for s, i, _, _ in LAYOUTS])
def test_layouts_are_found(tmp_path, spec, images, masks, depth_base):
    suffix = ".png" if spec == "HKU-IS" else ".jpg"  # HKU-IS's photos are PNGs
    make_split(tmp_path, images, masks, depth_base, suffix=suffix, depths=("depth_large",))
    split = find_split(tmp_path, spec)
    assert (split.images, split.masks, split.depth_base) == (tmp_path / images, tmp_path / masks, tmp_path / depth_base)
    assert split.name == spec.split(":")[-1]
    assert [(i.name, m.name) for i, m in split.pairs()] == [(f"a{suffix}", "a.png"), (f"b{suffix}", "b.png")]
    sample = SegmentationDataset(tmp_path, spec, 64, ("depth_large",))[1]
    assert sample["name"] == "b" and sample["size"].tolist() == [48, 48] and sample["mask"].max() == 1.0


def test_every_known_split_has_a_tested_layout():
    tested = {s for s, *_ in LAYOUTS}
    assert all(name in tested or name.startswith("DIS-TE") for name in KNOWN_SPLITS)  # DIS-TE* as DIS-VD


def test_the_data_root_may_be_the_dataset_folder(tmp_path):
    make_split(tmp_path / "HRSOD", "HRSOD_train", "HRSOD_train_mask")
    make_split(tmp_path / "DUTS", "DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask")
    assert find_split(tmp_path / "HRSOD", "HRSOD-TR").images == tmp_path / "HRSOD" / "HRSOD_train"
    assert find_split(tmp_path / "DUTS", "DUTS-TE").masks == tmp_path / "DUTS" / "DUTS-TE" / "DUTS-TE-Mask"
    # but plain images/ and masks/ straight under a root holding several datasets are nobody's
    make_split(tmp_path, "images", "masks")
    with pytest.raises(SplitNotFoundError):
        find_split(tmp_path, "ECSSD")


def test_unknown_and_missing_splits_are_explained(tmp_path):
    with pytest.raises(
        DatasetError, match=r"unknown split 'DUTS-TEST' .*known: DIS-TR, .*ECSSD, PASCAL-S; or PATH:NAME"
    ):
        find_split(tmp_path, "DUTS-TEST")
    with pytest.raises(SplitNotFoundError, match=r"no split HRSOD-TR under .*HRSOD/HRSOD_train \+ HRSOD_train_mask"):
        find_split(tmp_path, "HRSOD-TR")
    make_split(tmp_path, "DIS5K/DIS-VD/im", "DIS5K/DIS-VD/nothing")
    with pytest.raises(
        SplitNotFoundError, match=r"no mask folder for .*DIS-VD/im \(split DIS-VD\); looked for .*DIS5K/DIS-VD/gt$"
    ):
        find_split(tmp_path, "DIS-VD")
    make_split(tmp_path, "ECSSD/images", "ECSSD/ground_truth_mask")
    (tmp_path / "ECSSD" / "ground_truth_mask" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"no mask for .*ECSSD/images/b\.jpg in .*ground_truth_mask"):
        find_split(tmp_path, "ECSSD").pairs()
    # command-line errors are one line
    with pytest.raises(DatasetError) as e:
        find_split(tmp_path, "nonsense")
    assert "\n" not in str(e.value)


def test_missing_depth_names_the_command_for_that_split(tmp_path):
    make_split(tmp_path, "HRSOD/HRSOD_train", "HRSOD/HRSOD_train_mask", "HRSOD/HRSOD_train_depth", depths=DEPTH_FOLDERS)
    (tmp_path / "HRSOD" / "HRSOD_train_depth" / "depth_large_1024" / "b.png").unlink()
    message = (
        r"no depth map for .*HRSOD_train/b\.jpg in .*HRSOD_train_depth/depth_large_1024; make it with: "
        rf"python depth_prep/prepare_depth.py --data-root {tmp_path} --splits HRSOD-TR --model large "
        r"--out-name depth_large_1024 --input-size 1024"
    )
    with pytest.raises(DatasetError, match=message):
        SegmentationDataset(tmp_path, ["HRSOD-TR"], 64, DEPTH_FOLDERS[:3], "depth_large_1024")


class _FlatDepth:
    """Stands in for Depth-Anything: a left-to-right ramp per image."""

    def input_shape(self, image: np.ndarray) -> tuple[int, int]:
        return image.shape[:2]

    def estimate_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.tile(np.linspace(0, 1, i.shape[1], dtype=np.float32), (i.shape[0], 1)) for i in images]


def test_depth_maps_are_written_beside_each_split(tmp_path):
    make_split(tmp_path, "HRSOD/HRSOD_train", "HRSOD/HRSOD_train_mask")
    make_split(tmp_path, "HRSOD/HRSOD_test", "HRSOD/HRSOD_test_mask")
    make_split(tmp_path, "ECSSD/images", "ECSSD/ground_truth_mask")
    written, errors = prepare_depth_maps(tmp_path, ["HRSOD-TR", "HRSOD-TE", "ECSSD"], _FlatDepth, "depth_large")
    assert (written, errors) == (6, [])
    for folder in ("HRSOD/HRSOD_train_depth", "HRSOD/HRSOD_test_depth", "ECSSD"):
        assert sorted(p.name for p in (tmp_path / folder / "depth_large").iterdir()) == ["a.png", "b.png"]
    # and the readers find them there
    assert len(SegmentationDataset(tmp_path, ["HRSOD-TR", "HRSOD-TE", "ECSSD"], 64, ("depth_large",))) == 6
    written, errors = prepare_depth_maps(tmp_path, ["DUTS-TE"], _FlatDepth, "depth_large")
    assert written == 0 and len(errors) == 1 and "no split DUTS-TE" in errors[0]


# ------------------------------------------------------------------------------------------- several sets


def test_train_sets_config_and_the_old_key():
    assert load_config(TINY).data.train_sets == ("DIS-TR",)
    assert load_config(TINY, ["data.train_sets=[DIS-TR, HRSOD-TR]"]).data.train_sets == ("DIS-TR", "HRSOD-TR")
    # configs written by earlier versions (files, overrides, checkpoints) said data.train_split
    assert load_config(TINY, ["data.train_split=HRSOD-TR"]).data.train_sets == ("HRSOD-TR",)
    stored = to_dict(load_config(TINY))
    stored["data"]["train_split"] = stored["data"].pop("train_sets")[0]
    assert config_from_dict(stored).data.train_sets == ("DIS-TR",)
    with pytest.raises(ConfigError, match="data.train_sets: expected at least one split"):
        load_config(TINY, ["data.train_sets=[]"])
    for name in ("pdfnet_hrsod_uhrsd.yaml", "pdfnet_general.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.data.root == "data" and "HRSOD-TR" in cfg.data.train_sets and "UHRSD-TR" in cfg.data.train_sets


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> Path:
    """DIS-TR and DIS-VD in the DIS-5K download's layout, HRSOD-TR in HRSOD's, under one data root."""
    root = tmp_path_factory.mktemp("data")
    for split in ("DIS-TR", "DIS-VD"):
        folder = f"DIS5K/{split}"
        make_split(root, f"{folder}/im", f"{folder}/gt", folder, (f"{split}_0",), depths=DEPTH_FOLDERS)
    hrsod = ("HRSOD/HRSOD_train", "HRSOD/HRSOD_train_mask", "HRSOD/HRSOD_train_depth")
    make_split(root, *hrsod, ("h0", "h1"), depths=DEPTH_FOLDERS)
    return root


def test_samples_of_both_sets_are_drawn_with_their_own_seeds(two_sets):
    both = SegmentationDataset(two_sets, ["DIS-TR", "HRSOD-TR"], 64, DEPTH_FOLDERS[:3], "depth_large_1024", True)
    assert both.split_sizes() == {"DIS-TR": 1, "HRSOD-TR": 2}
    sampler = EpochSampler(len(both), seed=0)
    sampler.set_epoch(1)
    assert {both[key]["name"] for key in sampler} == {"DIS-TR_0", "h0", "h1"}
    # one set alone makes the same samples as the union's first indices: the seed is (seed, epoch, index)
    alone = SegmentationDataset(two_sets, "DIS-TR", 64, DEPTH_FOLDERS[:3], "depth_large_1024", True)
    assert torch.equal(alone[(3, 0)]["image"], both[(3, 0)]["image"])


def _train_two_sets(root: Path, out: Path, epochs: int, *overrides: str, resume=None) -> list[dict]:
    settings = [f"data.root={root}", "data.train_sets=[DIS-TR, HRSOD-TR]", f"output_dir={out}"]
    settings += [f"train.epochs={epochs}", "train.log_images=0", "train.batch_size=3", *overrides]
    return train(load_config(TINY, settings), resume=resume)


def test_training_on_two_sets(two_sets, tmp_path, capsys):
    records = _train_two_sets(two_sets, tmp_path, 1, "train.validate=false")
    assert records[0]["samples"] == 3 and records[0]["val"] == {}
    assert "data: DIS-TR (1) + HRSOD-TR (2)" in capsys.readouterr().err


@pytest.mark.slow  # about a minute on two cores
def test_training_on_two_sets_resumes_exactly(two_sets, tmp_path):
    def run(out: str, epochs: int, resume=None):
        return _train_two_sets(two_sets, tmp_path / out, epochs, resume=resume)

    straight = run("a", 2)
    assert [r["samples"] for r in straight] == [3, 3] and "maxFm" in straight[0]["val"]  # validation on DIS-VD
    run("b", 1)
    run("b", 2, resume="auto")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ testing


def test_test_over_sod_sets_writes_predictions_and_a_table_per_set(tmp_path, tiny_official_checkpoint):
    make_split(
        tmp_path, "DUTS/DUTS-TE/DUTS-TE-Image", "DUTS/DUTS-TE/DUTS-TE-Mask", "DUTS/DUTS-TE", depths=("depth_large",)
    )
    make_split(tmp_path, "ECSSD/images", "ECSSD/ground_truth_mask", "ECSSD", ("e0",), depths=("depth_large",))
    options = testing.TestOptions(input_size=256, device="cpu", workers=1, cache_dir=None, loader_workers=0)
    results = testing.run_test(tiny_official_checkpoint, tmp_path, ["DUTS-TE", "ECSSD"], tmp_path / "out", options)
    assert list(results) == ["DUTS-TE", "ECSSD"] and results["DUTS-TE"]["n"] == 2 and results["ECSSD"]["n"] == 1
    for split, stem, mask in (
        ("DUTS-TE", "b", "DUTS/DUTS-TE/DUTS-TE-Mask/b.png"),
        ("ECSSD", "e0", "ECSSD/ground_truth_mask/e0.png"),
    ):
        written = np.asarray(Image.open(tmp_path / "out" / "preds" / split / f"{stem}.png"))
        assert written.dtype == np.uint8 and written.shape == np.asarray(Image.open(tmp_path / mask)).shape
        assert (tmp_path / "out" / f"{split}.json").exists()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "### DUTS\n" in table and "### ECSSD\n" in table and "TE-mean" not in table
    assert table.count("| split | maxFm | maxFm_pr | wFm | MAE | Sm | meanEm | HCE | n |") == 2
    # a split that is missing a depth map is named, with its command, before anything runs
    (tmp_path / "ECSSD" / "depth_large" / "e0.png").unlink()
    with pytest.raises(DatasetError, match=r"--data-root .* --splits ECSSD --model large --out-name depth_large"):
        testing.run_test(tiny_official_checkpoint, tmp_path, ["DUTS-TE", "ECSSD"], tmp_path / "out2", options)
    with pytest.raises(DatasetError, match="unknown split 'ECCSD'"):
        testing.run_test(tiny_official_checkpoint, tmp_path, ["ECCSD"], tmp_path / "out3", options)
