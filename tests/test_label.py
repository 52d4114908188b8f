"""``pdfnet label``: a dataset from photos (linked or copied, never moved), its masks, uncertainty and depth,
``scores.csv`` least certain first and ``review.html`` (in headless Chromium), reruns, and training and testing
on the result; splits given by list files."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pdfnet.cli import main
from pdfnet.config import load_config
from pdfnet.data.dataset import SegmentationDataset
from pdfnet.data.depth import DepthEstimator, prepare_depth_maps
from pdfnet.data.layout import SplitNotFoundError, find_split
from pdfnet.errors import DatasetError
from pdfnet.evaluation import testing
from pdfnet.inference.uncertainty import read_scores, score
from pdfnet.io import link_or_copy, same_file
from pdfnet.provenance import fingerprint, read_options
from pdfnet.review import thumbnail_names

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"needs headless Chromium at {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
)
SIZES = {"vase": (70, 100), "leaf": (64, 48), "ring": (50, 90)}


def make_photos(folder: Path, sizes: dict[str, tuple[int, int]] = SIZES) -> dict[str, Path]:
    """Synthetic photos (a bright ellipse on noise), JPEG and PNG."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (stem, (H, W)) in enumerate(sizes.items()):
        yy, xx = np.mgrid[:H, :W]
        inside = ((yy - H / 2) / (H / 3)) ** 2 + ((xx - W / 2) / (W / 3)) ** 2 < 1
        image = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
        image[inside] = (220, 180, 60)
        paths[stem] = folder / f"{stem}.{'png' if i == 1 else 'jpg'}"
        Image.fromarray(image).save(paths[stem])
    return paths


def _label(args: list[str], checkpoint: str, depth_model: str) -> int:
    extra = ["--weights", checkpoint, "--depth-model", depth_model, "--input-size", "256", "--device", "cpu"]
    return main(["label", *args, *extra])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_official_checkpoint, tiny_depth_model) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("label")
    photos = make_photos(root / "photos")
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in photos.values()}
    out = root / "labelled"
    status = _label(
        [str(root / "photos"), "--out", str(out), "--batch-size", "2"], tiny_official_checkpoint, tiny_depth_model
    )
    return SimpleNamespace(root=root, photos=photos, out=out, status=status, stamps=stamps)


def test_label_writes_a_dataset_the_readers_take(labelled, tiny_depth_model):
    out = labelled.out
    assert labelled.status == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "depth_large",
        "images",
        "masks",
        "review.html",
        "review_files",
        "scores.csv",
        "uncertainty",
    ]
    for stem, photo in labelled.photos.items():
        image = out / "images" / photo.name
        assert os.path.samefile(image, photo)  # a hard link: no copy made, the photo untouched
        assert (photo.stat().st_mtime_ns, photo.stat().st_mode) == labelled.stamps[photo]
        for folder in ("masks", "uncertainty", "depth_large"):
            assert Image.open(out / folder / f"{stem}.png").size == SIZES[stem][::-1]
        assert read_options(out / "masks" / f"{stem}.png")["tta"] == "on"
    split = find_split(out, ".:labelled")  # the DIS-5K layout of a split of one's own
    assert [image.stem for image, _ in split.pairs()] == sorted(SIZES) and split.depth_dir("depth_large").is_dir()
    # the depth maps are those pdfnet depth makes, recorded alike: it finds nothing to do
    options = {"model": fingerprint(tiny_depth_model), "input-size": 518, "format": "png8", "precision": "fp32"}
    written, errors = prepare_depth_maps(
        out, [".:labelled"], lambda: DepthEstimator(tiny_depth_model), "depth_large", options=options, progress=False
    )
    assert (written, errors) == (0, [])


def test_scores_csv_follows_the_scores(labelled):
    out = labelled.out
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and {r["name"] for r in rows} == set(SIZES)
    keys = []
    for row in rows:
        mask = np.asarray(Image.open(out / row["mask"]))
        levels = np.asarray(Image.open(out / row["uncertainty"]))
        measured = score(mask, levels)  # what the files say
        assert read_scores(out / row["uncertainty"]) == measured
        assert float(row["image_uncertainty"]) == pytest.approx(measured.overall, abs=1e-6)
        assert int(row["mask_area"]) == measured.area and row["image"].startswith("images/")
        keys.append(measured.sort_key())
    assert keys == sorted(keys)  # least certain first


def test_the_review_page_names_every_image_and_needs_no_network(labelled):
    page = (labelled.out / "review.html").read_text()
    assert page.count("<article") == 3
    for stem in SIZES:
        for name in thumbnail_names(stem).values():
            assert f'src="review_files/{name}"' in page and (labelled.out / "review_files" / name).is_file()
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched


def test_a_rerun_does_only_what_is_missing(labelled, tiny_official_checkpoint, tiny_depth_model, capsys, tmp_path):
    out = labelled.out
    shutil.copytree(out, tmp_path / "ds", symlinks=True)  # the module's dataset stays as it was
    ds = tmp_path / "ds"
    stamps = {p: p.stat().st_mtime_ns for p in ds.rglob("*.png")}
    (ds / "masks" / "leaf.png").unlink()
    (ds / "review.html").unlink()
    (ds / "review_files" / "vase_mask.jpg").unlink()
    capsys.readouterr()
    assert _label([str(labelled.root / "photos"), "--out", str(ds)], tiny_official_checkpoint, tiny_depth_model) == 0
    captured = capsys.readouterr()
    assert "labelled 1 photo(s)" in captured.out and "2 already labelled" in captured.out
    assert (ds / "masks" / "leaf.png").is_file() and (ds / "review.html").is_file()
    assert (ds / "review_files" / "vase_mask.jpg").is_file()  # made again from the files
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if "leaf" not in p.name)
    # other options: kept and named
    args = [str(labelled.root / "photos"), "--out", str(ds), "--precision", "bf16"]
    assert _label(args, tiny_official_checkpoint, tiny_depth_model) == 0
    captured = capsys.readouterr()
    assert "precision=fp32 (now bf16)" in captured.err and "labelled 0 photo(s)" in captured.out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if "leaf" not in p.name)
    # ... and redone with --overwrite, recording the new options
    assert _label([*args, "--overwrite"], tiny_official_checkpoint, tiny_depth_model) == 0
    assert "labelled 3 photo(s)" in capsys.readouterr().out
    for folder in ("masks", "uncertainty"):
        assert read_options(ds / folder / "vase.png")["precision"] == "bf16"


def test_copies_and_bad_places(labelled, tiny_official_checkpoint, tiny_depth_model, capsys, tmp_path):
    photos = labelled.root / "photos"
    (tmp_path / "in").mkdir()
    shutil.copy(photos / "leaf.png", tmp_path / "in" / "leaf.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a photo")
    os.umask(umask := os.umask(0o077))  # this process's umask, read and set back
    args = [str(tmp_path / "in"), "--out", str(tmp_path / "copied"), "--copy", "--no-depth"]
    assert _label(args, tiny_official_checkpoint, tiny_depth_model) == 1  # the broken photo
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    copy = tmp_path / "copied" / "images" / "leaf.png"
    assert not os.path.samefile(copy, tmp_path / "in" / "leaf.png") and same_file(tmp_path / "in" / "leaf.png", copy)
    assert copy.stat().st_mode & 0o777 == 0o666 & ~umask and not (tmp_path / "copied" / "depth_large").exists()
    assert sorted(p.name for p in (tmp_path / "copied" / "images").iterdir()) == ["leaf.png"]  # nothing of broken
    # a run that labels nothing leaves no dataset folder behind
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    shutil.copy(tmp_path / "in" / "broken.jpg", only_broken)
    assert _label([str(only_broken), "--out", str(tmp_path / "none")], tiny_official_checkpoint, tiny_depth_model) == 1
    assert "broken.jpg" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # never among the inputs: the dataset, or its images/ folder, an input's folder
    assert _label([str(photos), "--out", str(photos)], tiny_official_checkpoint, tiny_depth_model) == 1
    assert "folder of inputs" in capsys.readouterr().err
    (tmp_path / "x" / "images").mkdir(parents=True)
    shutil.copy(photos / "vase.jpg", tmp_path / "x" / "images" / "vase.jpg")
    args = [str(tmp_path / "x" / "images"), "--out", str(tmp_path / "x")]
    assert _label(args, tiny_official_checkpoint, tiny_depth_model) == 1
    assert "images is a folder of inputs" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["images"]


def test_link_or_copy_falls_back_and_never_touches_the_source(tmp_path, monkeypatch):
    source = tmp_path / "a.jpg"
    source.write_bytes(b"photo")
    os.chmod(source, 0o640)
    before = source.stat()
    assert link_or_copy(source, tmp_path / "d" / "linked.jpg") == "linked"
    assert os.path.samefile(source, tmp_path / "d" / "linked.jpg")

    def cross_device(src, dst, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))

    monkeypatch.setattr(os, "link", cross_device)
    assert link_or_copy(source, tmp_path / "d" / "copied.jpg") == "copied"
    assert (tmp_path / "d" / "copied.jpg").read_bytes() == b"photo" and same_file(source, tmp_path / "d" / "copied.jpg")
    after = source.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == (before.st_mode, before.st_mtime_ns, 2)
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.startswith(".")]  # no temporaries left
    with pytest.raises(OSError, match="missing.jpg"):
        link_or_copy(tmp_path / "missing.jpg", tmp_path / "d" / "m.jpg")


def test_the_labelled_folder_trains_and_tests(labelled, tiny_official_checkpoint, tmp_path):
    from pdfnet.training.engine import train

    settings = [f"data.root={labelled.out}", "data.train_sets=[.:labelled]", "data.val_split=.:labelled"]
    settings += ["data.train_depths=[depth_large]", "data.target_depth=depth_large", f"output_dir={tmp_path / 'run'}"]
    settings += ["train.epochs=1", "train.log_images=0", "train.batch_size=3"]
    records = train(load_config(TINY, settings))
    assert records[0]["samples"] == 3 and "maxFm" in records[0]["val"]
    options = testing.TestOptions(input_size=256, device="cpu", workers=1, cache_dir=None, loader_workers=0)
    results = testing.run_test(tiny_official_checkpoint, labelled.out, [".:labelled"], tmp_path / "test", options)
    assert results["labelled"]["n"] == 3


@needs_chromium
def test_the_review_page_renders_every_thumbnail_in_chromium(labelled, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_argument("--disable-background-networking")
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((labelled.out / "review.html").as_uri())
        loaded = "return [...document.images].map(i => i.complete && i.naturalWidth > 0)"
        deadline = time.monotonic() + 20
        while not all(driver.execute_script(loaded)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert driver.execute_script(loaded) == [True] * 9  # three thumbnails of each of three images
        order = [a.get_attribute("data-name") for a in driver.find_elements(By.TAG_NAME, "article")]
        assert order == [r["name"] for r in csv.DictReader(open(labelled.out / "scores.csv"))]
        driver.save_screenshot(str(tmp_path / "review.png"))
        assert Image.open(tmp_path / "review.png").size[0] > 1000
        # marking a row lists its name, to copy
        driver.find_elements(By.CSS_SELECTOR, "input.mark")[1].click()
        assert driver.find_element(By.ID, "marked").get_attribute("value") == order[1]
        assert "marked" in driver.find_elements(By.TAG_NAME, "article")[1].get_attribute("class")
        # the page fetches nothing but its own files (the browser's own pages, e.g. its new tab, fetch more)
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        sent = [e["params"] for e in events if e["method"] == "Network.requestWillBeSent"]
        urls = [p["request"]["url"] for p in sent if p.get("documentURL", "").startswith("file://")]
        assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------- list files


def _lists(tmp_path: Path) -> Path:
    """Photos in two folders and masks in a third, named by list files in lists/ (paths relative to them)."""
    photos = make_photos(tmp_path / "a", {"x": (40, 50), "y": (30, 60)})
    photos |= make_photos(tmp_path / "b", {"z": (36, 36)})
    (tmp_path / "gt").mkdir()
    for stem, path in photos.items():
        Image.fromarray((np.asarray(Image.open(path))[..., 0] > 200).astype(np.uint8) * 255).save(
            tmp_path / "gt" / f"{stem}_gt.png"
        )
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train_img.txt").write_text(
        "# SOD-diffusion's --train_img_list: one path a line\n../a/x.jpg\n\n../a/y.png\n" + f"{tmp_path}/b/z.jpg\n"
    )
    (tmp_path / "lists" / "train_gt.txt").write_text("../gt/x_gt.png\n../gt/y_gt.png\n../gt/z_gt.png\n")
    return tmp_path


def test_a_split_given_by_list_files(tmp_path):
    root = _lists(tmp_path)
    split = find_split(root, "lists/train_img.txt+lists/train_gt.txt:mine")
    assert split.name == "mine" and split.depth_dir("depth_large") == root / "lists" / "depth_large"
    assert [(i.name, m.name) for i, m in split.pairs()] == [
        ("x.jpg", "x_gt.png"),  # line by line, not by stem
        ("y.png", "y_gt.png"),
        ("z.jpg", "z_gt.png"),
    ]
    assert find_split(root, "lists/train_img.txt+lists/train_gt.txt").name == "train_img"
    # depth maps beside the image list, then training samples
    written, errors = prepare_depth_maps(
        root, [split.spec], lambda: _FlatDepth(), "depth_large", options=None, progress=False
    )
    assert (written, errors) == (3, [])
    data = SegmentationDataset(root, split.spec, 64, ["depth_large"])
    assert len(data) == 3 and data[2]["name"] == "z" and data[2]["mask"].shape == (1, 64, 64)


class _FlatDepth:
    """A depth model of no content, for the layout only."""

    def input_shape(self, image):
        return image.shape[:2]

    def estimate_batch(self, images):
        return [np.zeros(im.shape[:2], np.float32) for im in images]


@pytest.mark.parametrize(
    "change, spec, error, message",
    [
        (None, "lists/none.txt+lists/train_gt.txt", SplitNotFoundError, "no image list .*none.txt"),
        ("gt: drop", "lists/train_img.txt+lists/train_gt.txt", DatasetError, "lists 3 images but .* lists 2 masks"),
        ("gt: missing", "lists/train_img.txt+lists/train_gt.txt", DatasetError, r"train_gt.txt:2: no such file"),
        ("img: twice", "lists/train_img.txt+lists/train_gt.txt", DatasetError, "two images named x"),
    ],
)
def test_list_file_mistakes_are_named(tmp_path, change, spec, error, message):
    root = _lists(tmp_path)
    gt, img = root / "lists" / "train_gt.txt", root / "lists" / "train_img.txt"
    if change == "gt: drop":
        gt.write_text("\n".join(gt.read_text().splitlines()[:2]) + "\n")
    elif change == "gt: missing":
        gt.write_text(gt.read_text().replace("y_gt", "w_gt"))
    elif change == "img: twice":  # another photo named x
        shutil.copy(root / "a" / "x.jpg", root / "b" / "x.jpg")
        img.write_text(img.read_text().replace("../a/y.png", "../b/x.jpg"))
    with pytest.raises(error, match=message):
        find_split(root, spec)


def test_test_py_scores_a_list_split(tmp_path, tiny_official_checkpoint):
    root = _lists(tmp_path)
    spec = "lists/train_img.txt+lists/train_gt.txt:mine"
    prepare_depth_maps(root, [spec], lambda: _FlatDepth(), "depth_large", options=None, progress=False)
    options = testing.TestOptions(input_size=256, device="cpu", workers=1, cache_dir=None, loader_workers=0)
    results = testing.run_test(tiny_official_checkpoint, root, [spec], tmp_path / "out", options)
    assert results["mine"]["n"] == 3 and sorted(p.stem for p in (tmp_path / "out" / "preds" / "mine").iterdir()) == [
        "x",
        "y",
        "z",
    ]


def test_label_under_torchrun(labelled, tiny_official_checkpoint, tiny_depth_model, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pdfnet"]
    command += ["label", str(labelled.root / "photos"), "--out", str(tmp_path / "ds"), "--weights"]
    command += [tiny_official_checkpoint, "--depth-model", tiny_depth_model, "--input-size", "256", "--device", "cpu"]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("labelled 3 photo(s)") == 1 and "by 2 processes" in result.stdout  # rank 0 sums up
    # what one process wrote (up to a grey level of batched arithmetic), and one table of all three
    for stem in SIZES:
        for folder in ("masks", "uncertainty", "depth_large"):
            a = np.asarray(Image.open(labelled.out / folder / f"{stem}.png")).astype(int)
            b = np.asarray(Image.open(tmp_path / "ds" / folder / f"{stem}.png")).astype(int)
            assert np.abs(a - b).max() <= 1, (folder, stem)
    assert len(list(csv.DictReader(open(tmp_path / "ds" / "scores.csv")))) == 3
