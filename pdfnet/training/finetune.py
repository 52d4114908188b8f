"""Fine-tuning PDFNet on one's own photos in one call: ``pdfnet finetune IMAGES MASKS --out DIR``.

What it does, in this order:

1. Checks, before anything is written: every image has a mask and every mask an image (paired by file stem),
   each readable, of its image's size and black-and-white (:mod:`pdfnet.data.pairing`; all problems listed
   at once); the starting weights exist (fetched from the Hugging Face Hub for ``base``/``general``); the output
   folder holds no other run.
2. The pseudo-depth maps the recipe reads, made once into a cache beside the images,
   ``<parent of IMAGES>/.pdfnet-depth/<IMAGES folder name>/depth_<model>/<stem>.png`` (``--depth-cache`` moves
   it): maps that exist are reused, so an interrupted step continues and later runs on the same photos make
   none; the depth model is loaded only when some map is missing. Nothing is written in the image folder.
3. Under the output folder's lock: split files ``DIR/data/train.yaml`` and ``DIR/data/val.yaml`` (the
   validation split held out at random, seeded by ``train.seed``, unless ``--val`` gives one), and the starting
   weights' scores on the validation split (``DIR/val/before/``).
4. Training by :func:`pdfnet.training.engine.train`, so every guarantee of ``train.py`` holds (one run per
   folder, atomic checkpoints, exact ``--resume auto``); it validates after each epoch and keeps ``best.pt``.
5. ``best.pt``'s scores (``DIR/val/after/``), and the before/after table (``DIR/results.md``, ``DIR/finetune.json``).

The table's scores are the DIS metrics of ``test.py`` (:mod:`pdfnet.evaluation.metrics`): each validation image
predicted as ``pdfnet predict`` does (no test-time augmentation, fp32), its 8-bit mask at the image's size scored
against the mask. The per-epoch lines (``metrics.jsonl``, which pick ``best.pt``) are the training validation's
maxFm and MAE, computed at the network's input size as the original code computes them: close, not equal.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import Config, ModelConfig, config_from_dict, load_config, parse_override, to_dict
from ..data.layout import Split, find_by_stem, read_split_file, write_split_file
from ..data.pairing import ImagePair, check_pairs, mask_notes, raise_problems
from ..distributed import Runtime
from ..errors import CheckpointError, ConfigError, DatasetError, DepthModelError, OutputError
from ..hub import DEPTH_MODELS
from ..io import read_gray, write_text_atomic
from ..model.checkpoint import checkpoint_architecture, load_pdfnet
from ..model.network import PDFNet
from ..runtime import effective_precision, resolve_device
from . import checkpointing as ckpt
from .engine import build_loader, resumed_config, train, validate

DEPTH_SIZES = tuple(DEPTH_MODELS)  # smallest first: the largest chosen gives validation and loss targets
START_NAMES = ("base", "general", "imagenet")
DEPTH_CACHE = ".pdfnet-depth"
RECORD = "finetune.json"
TABLE_KEYS = ("maxFm", "wFm", "MAE", "HCE")
KEPT_MAPS = "used as they are; delete that folder to have its maps made again"
# settings the command's arguments make; an override of one would break the run's data or its starting point
MANAGED_KEYS = {
    "data.root": "IMAGES MASKS",
    "data.train_sets": "IMAGES MASKS",
    "data.val_split": "--val",
    "data.train_depths": "--depth-models",
    "data.eval_depth": "--depth-models",
    "data.target_depth": "--depth-models",
    "train.init_from": "--from",
    "train.pretrained_backbone": "--from",
    "output_dir": "--out",
}


@dataclass(frozen=True)
class FinetuneSetup:
    """What ``pdfnet finetune`` is asked, besides ``key=value`` overrides.

    Attributes:
        images, masks: the photos and their masks (file stems pair them).
        out: the run's folder.
        val: (images, masks) of a validation split of one's own, or None to hold one out of ``images``.
        val_fraction: the share of the pairs held out for validation (at least one) when ``val`` is None.
        start: ``base``, ``general`` (the published weights), ``imagenet`` (the Swin-B encoder alone) or a
            checkpoint file.
        depth_models: which Depth-Anything-V2 maps to make: ``small``/``base``/``large``, each optionally
            ``NAME=MODEL`` with MODEL a local folder or Hugging Face repo id (as ``predict --depth-model``).
        depth_cache: where the depth maps go (a folder per image folder inside), or None for beside the images.
    """

    images: Path
    masks: Path
    out: Path
    val: tuple[Path, Path] | None = None
    val_fraction: float = 0.1
    start: str = "base"
    depth_models: tuple[str, ...] = DEPTH_SIZES
    depth_cache: Path | None = None

    def record(self) -> dict:
        """The setup as stored in ``finetune.json`` (absolute folders), to tell a resumed run is the same."""
        return {
            "images": _absolute(self.images),
            "masks": _absolute(self.masks),
            "val": [_absolute(p) for p in self.val] if self.val else None,
            "val_fraction": None if self.val else self.val_fraction,
            "from": self.start if self.start in START_NAMES else _absolute(Path(self.start)),
            "depth_models": dict(parse_depth_models(self.depth_models)),
            "depth_cache": _absolute(self.depth_cache) if self.depth_cache else None,
        }


@dataclass
class StartWeights:
    """Where a fine-tune starts: ``train.init_from`` or ``train.pretrained_backbone``, and the architecture."""

    init_from: str | None
    backbone: str | None
    model: ModelConfig
    description: str


@dataclass
class Plan:
    """The run's data: its splits (as split files will describe them) and the depth folders to make."""

    train: Split
    val: Split
    held_out: bool
    depth_models: dict[str, str]  # depth folder -> model (a size name, repo id or folder)


def _absolute(path: Path) -> str:
    return str(Path(path).expanduser().resolve())


# ------------------------------------------------------------------------------------------------ settings


def parse_depth_models(items: Sequence[str]) -> list[tuple[str, str]]:
    """``["small", "large=/models/da-large"]`` -> ``[("small", "small"), ("large", "/models/da-large")]``,
    smallest first.

    Raises:
        ConfigError: an unknown size or one given twice.
    """
    chosen: dict[str, str] = {}
    for item in items:
        size, _, model = item.partition("=")
        size = size.strip().lower()
        if size not in DEPTH_SIZES or (_ and not model.strip()):
            raise ConfigError(
                f"--depth-models: {item!r} is not one of {', '.join(DEPTH_SIZES)} (or NAME=MODEL, MODEL a local "
                "folder or Hugging Face repo id of that Depth-Anything-V2 model)"
            )
        if size in chosen:
            raise ConfigError(f"--depth-models: {size} is given twice")
        chosen[size] = model.strip() or size
    if not chosen:
        raise ConfigError("--depth-models: give at least one of small, base, large")
    return [(size, chosen[size]) for size in DEPTH_SIZES if size in chosen]


def depth_settings(items: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...], str, str]:
    """(depth folder -> model, train depths, eval depth, target depth) for ``--depth-models``: training picks
    among the chosen models' maps, validation and the depth loss's target come from the largest chosen (the
    target at a 1024-pixel input), as the recipe does with small, base and large."""
    chosen = parse_depth_models(items)
    folders = {f"depth_{size}": model for size, model in chosen}
    largest_size, largest_model = chosen[-1]
    folders[f"depth_{largest_size}_1024"] = largest_model
    return folders, tuple(f"depth_{size}" for size, _ in chosen), f"depth_{largest_size}", f"depth_{largest_size}_1024"


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys of ``key=value`` overrides."""
    keys = []
    for text in overrides:
        node, key = parse_override(text), []
        while isinstance(node, dict) and len(node) == 1:
            name, node = next(iter(node.items()))
            key.append(name)
        keys.append(".".join(key))
    return keys


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse overrides of the settings the command's arguments make, naming the argument to use, and those
    ``train.py`` would refuse (an unknown key, a wrong type), naming the key.

    Raises:
        ConfigError: naming the key.
    """
    for text, key in zip(overrides, override_keys(overrides)):
        if key in MANAGED_KEYS:
            raise ConfigError(f"{key} is set by finetune's {MANAGED_KEYS[key]}; give that instead of {text!r}")
    load_config(None, overrides)


def check_flags(setup: FinetuneSetup, overrides: Sequence[str]) -> None:
    """The checks that take no time, before the folders are read: ``--depth-models``, the overrides, and that
    ``--from`` names published weights or an existing path.

    Raises:
        ConfigError, CheckpointError: naming the flag or key.
    """
    depth_settings(setup.depth_models)
    check_overrides(overrides)
    if setup.start not in START_NAMES and not os.path.exists(setup.start):
        raise CheckpointError(
            f"--from {setup.start}: no such file; expected {', '.join(START_NAMES)} or a PDFNet checkpoint file"
        )


def resolve_start(start: str) -> StartWeights:
    """The weights ``--from`` names, fetched now if they come from the Hub (so that offline, the error comes
    before any work), and the architecture to build.

    Raises:
        CheckpointError: unknown, offline without a cached copy, or not a PDFNet checkpoint; saying what to do.
    """
    from ..hub import PRETRAINED, download_weights
    from ..model.backbone import swin_b_weights

    if start == "imagenet":
        return StartWeights(None, swin_b_weights(), ModelConfig(), "ImageNet Swin-B encoder, fresh decoder")
    if start in PRETRAINED:
        try:
            path = download_weights(start)
        except CheckpointError as e:
            raise CheckpointError(f"{e} (for finetune: --from PATH)") from None
        description = f"published weights {start!r} ({PRETRAINED[start][0]})"
    else:
        if not os.path.exists(start):  # (a folder, an empty file, ... are named by checkpoint_architecture)
            raise CheckpointError(
                f"--from {start}: no such file; expected {', '.join(START_NAMES)} or a PDFNet checkpoint file"
            )
        path, description = start, start
    return StartWeights(path, None, replace(checkpoint_architecture(path), depth_head=True), description)


def build_config(setup: FinetuneSetup, start: StartWeights, overrides: Sequence[str]) -> Config:
    """The recipe's settings (:class:`pdfnet.config.Config`'s defaults), the starting weights' architecture, the
    data of ``setup``, then ``overrides``. On a CPU the recipe's fp16 (emulated there, slower than fp32) becomes
    fp32 unless ``train.precision`` is set."""
    check_overrides(overrides)
    _, train_depths, eval_depth, target_depth = depth_settings(setup.depth_models)
    base = Config()
    data = replace(
        base.data,
        root=str(setup.out / "data"),
        train_sets=("train.yaml:train",),
        val_split="val.yaml:val",
        train_depths=train_depths,
        eval_depth=eval_depth,
        target_depth=target_depth,
    )
    train_cfg = replace(base.train, init_from=start.init_from, pretrained_backbone=start.backbone)
    cfg = load_config(None, overrides, base=replace(base, model=start.model, data=data, train=train_cfg))
    cfg = replace(cfg, output_dir=str(setup.out))
    if "train.precision" not in override_keys(overrides):
        precision, _ = effective_precision(resolve_device(cfg.train.device), cfg.train.precision)
        cfg = replace(cfg, train=replace(cfg.train, precision=precision))
    return cfg


# ---------------------------------------------------------------------------------------------------- data


def check_data(setup: FinetuneSetup) -> tuple[list[ImagePair], list[ImagePair] | None, list[str]]:
    """(training pairs, validation pairs or None, notes); every problem of both folders in one DatasetError."""
    found = check_pairs(setup.images, setup.masks)
    problems, foreground = list(found.problems), dict(found.foreground)
    val = None
    if setup.val is not None:
        if _absolute(setup.val[0]) == _absolute(setup.images):
            problems.append(("folder", f"--val {setup.val[0]} is the training image folder; give other photos"))
        else:
            val_found = check_pairs(*setup.val)
            problems += val_found.problems
            val = val_found.pairs
            foreground |= {f"{setup.val[0].name}/{k}": v for k, v in val_found.foreground.items()}
    elif len(found.pairs) < 2 and not found.problems:
        problems.append(("folder", f"{setup.images}: one pair cannot be split for validation; add photos or --val"))
    where = f"{setup.images} and {setup.masks}" + (f" (and --val {setup.val[0]} {setup.val[1]})" if setup.val else "")
    raise_problems(problems, where)
    return found.pairs, val, mask_notes(foreground)


def hold_out(stems: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training stems, validation stems): ``round(fraction * n)`` stems (at least one, at most n - 1) drawn
    at random from ``seed``, the same for the same folder and seed."""
    stems = sorted(stems)
    n_val = min(max(1, round(fraction * len(stems))), len(stems) - 1)
    order = torch.randperm(len(stems), generator=torch.Generator().manual_seed(seed)).tolist()
    val = {stems[i] for i in order[:n_val]}
    return [s for s in stems if s not in val], sorted(val)


def depth_base(images: Path, cache: Path | None) -> Path:
    """The folder the depth folders of an image folder go in: ``<cache>/<its name>``, the cache being
    ``<its parent>/.pdfnet-depth`` unless given."""
    images = Path(_absolute(images))
    return Path(_absolute(cache) if cache else images.parent / DEPTH_CACHE) / images.name


def make_plan(setup: FinetuneSetup, cfg: Config, pairs: list[ImagePair], val_pairs: list[ImagePair] | None) -> Plan:
    """The training and validation splits of a fresh run."""
    folders, *_ = depth_settings(setup.depth_models)
    base = depth_base(setup.images, setup.depth_cache)
    stems = [p.stem for p in pairs]
    if val_pairs is None:
        train_stems, val_stems = hold_out(stems, setup.val_fraction, cfg.train.seed)
        val = Split("val", "val.yaml:val", setup.images, setup.masks, base, "val", tuple(val_stems))
    else:
        train_stems = stems
        val_images, val_masks = setup.val
        val_base = depth_base(val_images, setup.depth_cache)
        val = Split("val", "val.yaml:val", val_images, val_masks, val_base, "val", tuple(p.stem for p in val_pairs))
    train_split = Split("train", "train.yaml:train", setup.images, setup.masks, base, "train", tuple(train_stems))
    return Plan(train_split, val, val_pairs is None, folders)


def stored_plan(setup: FinetuneSetup, out: Path) -> Plan:
    """The splits of a run being resumed, as its split files say."""
    data = out / "data"
    try:
        train_split = read_split_file(data / "train.yaml", "train", "train.yaml:train")
        val = read_split_file(data / "val.yaml", "val", "val.yaml:val")
    except DatasetError as e:
        raise DatasetError(f"cannot resume {out}: {e}") from None
    folders, *_ = depth_settings(setup.depth_models)
    return Plan(train_split, val, val.images == train_split.images, folders)


def depth_jobs(plan: Plan, cfg: Config) -> dict[str, list[Split]]:
    """Depth folder -> the splits (one per image folder) whose images need its maps: the training images every
    folder (training depths and the loss target), the validation images the evaluation depth."""
    jobs: dict[str, list[Split]] = {}
    for folder in plan.depth_models:
        stems_by_folder: dict[tuple[Path, Path, Path], set[str]] = {}
        wanted = [plan.train] + ([plan.val] if folder == cfg.data.eval_depth else [])
        for split in wanted:
            stems_by_folder.setdefault((split.images, split.masks, split.depth_base), set()).update(split.stems or ())
        jobs[folder] = [
            Split(images.name, str(images), images, masks, base, images.name, tuple(sorted(stems)))
            for (images, masks, base), stems in stems_by_folder.items()
        ]
    return jobs


def depth_options(model: str, folder: str) -> dict[str, object]:
    """What makes the maps of a depth folder (recorded in each map, as ``pdfnet depth`` records them): a rerun
    with another model keeps and reports the maps made before instead of mixing them up silently."""
    from ..provenance import depth_model_identity

    size = 1024 if folder.endswith("_1024") else 518
    return {"model": depth_model_identity(model), "input-size": size, "format": "png8", "precision": "fp32"}


def check_depth_sources(plan: Plan, cfg: Config) -> None:
    """Check, before any work, that the depth models of the folders with missing maps can be loaded (a local
    folder that exists, a Hub model cached or reachable); models whose maps all exist are not looked at.

    Raises:
        DepthModelError: naming the ``--depth-models`` item, why, and the two ways out.
    """
    from ..hub import check_depth_model_source, resolve_depth_model

    checked = set()
    for folder, splits in depth_jobs(plan, cfg).items():
        model = plan.depth_models[folder]
        missing = [split.depth_dir(folder) for split in splits if _missing_maps(split, folder)]
        if not missing or model in checked:
            continue
        checked.add(model)
        try:
            check_depth_model_source(model)
        except DepthModelError as e:
            # the reason without predict's advice (its flags are not finetune's)
            why = str(e).split(". On a machine")[0].split(": --depth-model takes")[0]
            size = folder.removeprefix("depth_").removesuffix("_1024")
            repo = resolve_depth_model(size)
            raise DepthModelError(
                f"--depth-models {size}{'' if model == size else '=' + model}: {why}. Give {size}=FOLDER with a "
                f"copy of the model (`hf download {repo} --local-dir FOLDER` where there is internet), or put "
                f"ready-made maps in {missing[0]}"
            ) from None


def _missing_maps(split: Split, folder: str) -> bool:
    return any(not (split.depth_dir(folder) / f"{image.stem}.png").exists() for image in split.image_files())


def make_depth_maps(plan: Plan, cfg: Config, device: torch.device) -> int:
    """Every missing depth map of the plan (existing ones kept); returns how many were made.

    Raises:
        DepthModelError: a depth model cannot be loaded (only tried when some of its maps are missing).
        DatasetError: some image could not be read, naming each.
    """
    from ..data.depth import DepthEstimator, prepare_depth_maps

    made, errors = 0, []
    for folder, splits in depth_jobs(plan, cfg).items():
        drop_stale_maps(splits, folder)
        model = plan.depth_models[folder]
        options = depth_options(model, folder)

        def estimator(model: str = model, size: int = options["input-size"]) -> DepthEstimator:
            return DepthEstimator(model, device=device, precision="fp32", input_size=size)

        written, failed = prepare_depth_maps(
            ".", splits, estimator, out_name=folder, options=options, kept_action=KEPT_MAPS
        )
        made, errors = made + written, errors + failed
    if errors:
        raise DatasetError("cannot make depth maps: " + "; ".join(errors))
    return made


def drop_stale_maps(splits: list[Split], folder: str) -> int:
    """Delete the cached maps of ``folder`` that are older than their photo (a photo replaced or edited since),
    so that they are made again; returns how many."""
    dropped = 0
    for split in splits:
        for image in split.image_files():
            path = split.depth_dir(folder) / f"{image.stem}.png"
            try:
                if path.stat().st_mtime < image.stat().st_mtime:
                    path.unlink()
                    dropped += 1
            except FileNotFoundError:
                continue
    return dropped


def write_splits(plan: Plan, out: Path) -> None:
    for split, name in ((plan.train, "train.yaml"), (plan.val, "val.yaml")):
        write_split_file(out / "data" / name, split.images, split.masks, split.depth_base, list(split.stems or ()))


# ------------------------------------------------------------------------------------------------- scoring


def score(model: PDFNet, split: Split, depth_folder: str, pred_dir: Path, device, input_size: int) -> dict:
    """The DIS metrics of ``model`` on ``split``, as ``pdfnet predict`` would cut each image out (fp32, no
    test-time augmentation); the 8-bit masks are written into ``pred_dir``. ``model`` is converted for inference
    (pass a copy of one still training)."""
    from ..evaluation.folders import default_cache_dir
    from ..evaluation.metrics import MaskCache, score_image, summarize
    from ..evaluation.testing import predict_split
    from ..inference.predictor import Predictor

    predictor = Predictor(model, None, device=device, precision="fp32", input_size=input_size)
    pairs = split.pairs()
    depths = [find_by_stem(split.depth_dir(depth_folder), image.stem) for image, _ in pairs]
    missing = [image.name for (image, _), d in zip(pairs, depths) if d is None]
    if missing:
        raise DatasetError(f"no {depth_folder} map for {', '.join(missing[:5])} in {split.depth_dir(depth_folder)}")
    files = [(image, d) for (image, _), d in zip(pairs, depths)]
    predict_split(predictor, ".", split.spec, pred_dir, depth_folder=depth_folder, num_workers=0, files=files)
    cache = MaskCache(default_cache_dir())
    scores = []
    for image, mask_path in pairs:
        mask = read_gray(mask_path)
        prediction = read_gray(pred_dir / f"{image.stem}.png")
        scores.append(score_image(prediction, mask, cache.get(mask_path, mask > 128), image.stem))
    summary = summarize(scores)
    return {k: summary[k] for k in (*TABLE_KEYS, "n")}


def results_table(before: dict, after: dict, best: Path, epoch: int | None) -> str:
    """The Markdown before/after table of ``finetune``."""
    lines = [
        "| weights | maxFm (higher is better) | wFm (higher) | MAE (lower) | HCE (lower) |",
        "|---|---|---|---|---|",
    ]
    for name, scores in (("before (starting weights)", before), (f"after ({best.name}, epoch {epoch})", after)):
        cells = [f"{scores[k]:.1f}" if k == "HCE" else f"{scores[k]:.3f}" for k in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main


def _read_record(out: Path) -> dict:
    try:
        return json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _check_same_setup(setup: FinetuneSetup, stored: dict, out: Path) -> None:
    ours, theirs = setup.record(), stored.get("setup")
    if theirs is None:
        raise OutputError(f"{out} holds a run that pdfnet finetune did not start ({out / RECORD} is missing)")
    flags = {"images": "IMAGES", "masks": "MASKS", "val": "--val", "val_fraction": "--val-fraction"}
    flags |= {"from": "--from", "depth_models": "--depth-models", "depth_cache": "--depth-cache"}
    differ = [f"{flags[k]}: {theirs.get(k)!r} -> {ours[k]!r}" for k in flags if theirs.get(k) != ours[k]]
    if differ:
        raise ConfigError(
            f"resuming {out} with other data or weights than it started with ({'; '.join(differ)}); give the same, "
            "or start a fresh --out"
        )


def _can_create(folder: Path, hint: str = "") -> None:
    """Refuse, before any work, a folder that cannot be written in or made (its nearest existing ancestor is no
    writable folder)."""
    probe = Path(_absolute(folder))
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {folder}: {probe} is not a writable folder{hint}")


def finetune(setup: FinetuneSetup, overrides: Sequence[str] = (), resume: str | None = None) -> dict:
    """Fine-tune as the module says; returns ``finetune.json``'s content (setup, split sizes, before, after).

    Args:
        overrides: ``key=value`` settings on top of the recipe's (as ``train.py``), not those the setup makes.
        resume: ``auto`` (continue ``out/last.pt`` when it exists, else start) or a checkpoint path.

    Raises:
        DatasetError: problems with the folders (all of them, before anything is written).
        CheckpointError, ConfigError, OutputError, DepthModelError: naming the file, key or folder at fault.
    """
    out = setup.out
    check_flags(setup, overrides)  # the flags first: they are checked in no time
    pairs, val_pairs, notes = check_data(setup)
    last = ckpt.resolve_resume(resume, out)
    if last is not None:  # the run's own settings and splits; the weights come from its checkpoint
        _check_same_setup(setup, _read_record(out), out)
        stored = config_from_dict(ckpt.read_training_checkpoint(last)["config"])
        advice = "Resume with the settings the run started with, or start another --out"
        cfg = resumed_config(stored, load_config(None, overrides, base=stored), last, advice)
        plan = stored_plan(setup, out)
        start_description = f"resuming {last}"
    else:
        found = [name for name in ckpt.RUN_FILES if (out / name).exists()] if resume is None else []
        if found:
            raise OutputError(
                f"{out} already holds a run ({', '.join(found)}); continue it with --resume auto (the same IMAGES, "
                "MASKS and options), or choose another --out"
            )
        _can_create(out)
        start = resolve_start(setup.start)
        cfg = build_config(setup, start, overrides)
        plan = make_plan(setup, cfg, pairs, val_pairs)
        start_description = f"starting from {start.description}"
    check_depth_sources(plan, cfg)
    log = _printer()
    for note in notes:
        log(f"note: {note}")
    held = f"held out at random, seed {cfg.train.seed}; --val gives your own" if plan.held_out else "--val"
    sizes = f"train: {len(plan.train.stems)} images, validation: {len(plan.val.stems)} images"
    log(f"{sizes} ({held}); {start_description}")

    for base in dict.fromkeys((plan.train.depth_base, plan.val.depth_base)):
        _can_create(base, "; --depth-cache DIR puts the depth maps elsewhere")
    device = resolve_device(cfg.train.device)
    made = make_depth_maps(plan, cfg, device)
    cache = ", ".join(sorted({str(s.depth_base) for s in (plan.train, plan.val)}))
    log(f"depth maps: {made} made, the rest reused, in {cache}")

    record = {"setup": setup.record(), "split": {"train": len(plan.train.stems), "val": len(plan.val.stems)}}

    def prepare(model: PDFNet, resuming: bool) -> None:
        """Under the folder's lock, as the run starts: its split files and the starting weights' scores."""
        if resuming:
            return
        write_splits(plan, out)
        stored = _read_record(out)
        if stored.get("setup") == record["setup"] and stored.get("config") == to_dict(cfg) and "before" in stored:
            before, checked = stored["before"], stored["before_validation"]  # from a start stopped before epoch 1
        else:
            log("scoring the starting weights on the validation split")
            rt = Runtime(device)
            checked, _ = validate(copy.deepcopy(model), build_loader(cfg, rt, (cfg.data.val_split,), False), cfg, rt)
            before = score(
                copy.deepcopy(model), plan.val, cfg.data.eval_depth, out / "val" / "before", device, cfg.data.input_size
            )
        record.update(config=to_dict(cfg), before=before, before_validation=checked)
        write_text_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
        log(
            f"before training: validation maxFm {checked['maxFm']:.4f}, MAE {checked['MAE']:.4f} (as the epochs' "
            f"lines below); DIS metrics {_line(before)}"
        )

    done = last is not None and ckpt.read_training_checkpoint(last)["epoch"] >= cfg.train.epochs
    if done:
        log(f"{last} has finished its {cfg.train.epochs} epoch(s); scoring it (train.epochs=N continues it)")
    else:
        train(cfg, resume=resume, prepare=prepare)
    return _finish(out, cfg, plan, device, log)


def _finish(out: Path, cfg: Config, plan: Plan, device: torch.device, log) -> dict:
    record = _read_record(out)
    best = out / "best.pt"
    checkpoint = ckpt.read_training_checkpoint(best)
    log(f"scoring {best} on the validation split")
    after = score(
        load_pdfnet(checkpoint), plan.val, cfg.data.eval_depth, out / "val" / "after", device, cfg.data.input_size
    )
    after["epoch"] = checkpoint["epoch"]
    record["after"] = after
    write_text_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    table = results_table(record["before"], after, best, checkpoint["epoch"])
    depth_model = plan.depth_models[cfg.data.eval_depth]
    depth = "" if depth_model == "large" else f" --depth-model {depth_model}"
    text = (
        f"Validation ({after['n']} images): the DIS metrics of test.py at each image's size.\n\n{table}\n"
        f"best.pt: {best}\nuse it: pdfnet predict PHOTOS --weights {best}{depth}\n"
    )
    write_text_atomic(out / "results.md", text)
    print(text, end="")
    if after["maxFm"] < record["before"]["maxFm"]:
        log(
            "warning: the fine-tuned weights score below the starting ones on validation (more epochs, more "
            "photos, or a lower optim.lr may help)"
        )
    return record


def _line(scores: dict) -> str:
    return ", ".join(f"{k} {scores[k]:.1f}" if k == "HCE" else f"{k} {scores[k]:.3f}" for k in TABLE_KEYS)


def _printer():
    from tqdm import tqdm

    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    return log
