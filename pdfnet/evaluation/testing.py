"""``python test.py``: predict dataset splits with a checkpoint, as the authors' ``Test.py`` does, and score them.

Every prediction is the PNG the authors' script writes for that image (the same pre-processing, test-time
augmentation and 8-bit post-processing, through :class:`~pdfnet.Predictor`), named ``<stem>.png`` at the
image's size; the scores are the DIS metrics of :mod:`pdfnet.evaluation.metrics`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.layout import dataset_of, find_by_stem, find_split
from ..distributed import Runtime, all_ranks, everywhere, held_by_main, on_main, shard
from ..errors import DatasetError, OutputError
from ..inference.predictor import Predictor
from ..io import FolderLock, check_writable_folder, read_gray, read_image, write_image_atomic, write_text_atomic
from ..model.checkpoint import load_pdfnet
from ..provenance import make_record, report_lines, sort_existing
from ..runtime import resolve_device
from .folders import evaluate_predictions, write_results
from .published import PUBLISHED, PublishedScores
from .table import te_mean

TABLE_KEYS = ("maxFm", "maxFm_pr", "wFm", "MAE", "Sm", "meanEm", "HCE")


def _split_files(root: str | os.PathLike, spec: str, depth_folder: str | None) -> list[tuple[Path, Path | None]]:
    """(image, depth map) of every image of a split; (image, None) without a depth folder (an RGB-only model).

    Raises:
        DatasetError: an image has no depth map; the message names the command that makes them.
    """
    split = find_split(root, spec)
    images = split.image_files()
    if depth_folder is None:
        return [(p, None) for p in images]
    depth_dir = split.depth_dir(depth_folder)
    depths = [find_by_stem(depth_dir, p.stem) for p in images]
    missing = [p.name for p, d in zip(images, depths) if d is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) of {spec} have no depth map in {depth_dir} (e.g. {missing[0]}); make them "
            f"with: python depth_prep/prepare_depth.py --data-root {root} --splits {spec} --model large "
            f"--out-name {depth_folder}"
        )
    return list(zip(images, depths))


class _SplitImages(Dataset):
    """(stem, image (H, W, 3) uint8, depth map (h, w) uint8 or None) of each (image, depth map) pair, read in
    loader workers."""

    def __init__(self, files: list[tuple[Path, Path | None]]) -> None:
        self.images, self.depths = [i for i, _ in files], [d for _, d in files]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray | None]:
        depth = self.depths[index]
        return self.images[index].stem, read_image(self.images[index]), None if depth is None else read_gray(depth)


def _columns(batch: list[tuple]) -> list[tuple]:
    return list(zip(*batch))


def predict_split(
    predictor: Predictor,
    data_root: str | os.PathLike,
    split: str,
    out_dir: Path,
    batch_size: int = 1,
    depth_folder: str = "depth_large",
    num_workers: int = 2,
    rt: Runtime | None = None,
    files: list[tuple[Path, Path]] | None = None,
    record: dict[str, str] | None = None,
) -> int:
    """Write the 8-bit prediction of every image of ``split`` into ``out_dir`` as ``<stem>.png``; returns how
    many. Depth maps come from ``depth_folder`` (PNG or the authors' JPEG, matched by stem; none are read for an
    RGB-only network). Under ``torchrun`` (``rt``), this process's share of ``files`` (the split's (image, depth
    map) pairs as rank 0 listed them). ``record`` (what made them: :mod:`pdfnet.provenance`) is stored in every PNG."""
    folder = depth_folder if predictor.uses_depth else None
    files = files if files is not None else _split_files(data_root, split, folder)
    mine = shard(files, rt) if rt is not None else files
    loader = DataLoader(_SplitImages(mine), batch_size=batch_size, num_workers=num_workers, collate_fn=_columns)
    show = rt is None or rt.is_main
    written = 0
    for names, images, depths in tqdm(loader, desc=f"predict {split}", unit="batch", disable=not show):
        for name, mask in zip(names, predictor.masks_from_maps(images, depths)):
            write_image_atomic(out_dir / f"{name}.png", mask, record)
            written += 1
    return written


@dataclass
class TestOptions:
    """How ``test.py`` runs (its flags)."""

    tta: bool = False
    batch_size: int = 1
    precision: str = "fp32"
    variant: str | None = None
    device: str | None = None
    input_size: int = 1024
    workers: int | None = None
    cache_dir: str | None = "default"
    depth_folder: str = "depth_large"
    loader_workers: int = 2
    overwrite: bool = False

    def record(self, checkpoint: str | os.PathLike, uses_depth: bool = True) -> dict[str, object]:
        """The options that change a prediction, recorded in each (:mod:`pdfnet.provenance`); an RGB-only
        network's (``uses_depth`` false) record no depth maps: it reads none."""
        from ..provenance import fingerprint

        name = os.fspath(checkpoint)
        return {
            "checkpoint": fingerprint(name) if os.path.isfile(name) else name,
            "variant": self.variant or "auto",
            "depth": self.depth_folder if uses_depth else "none (RGB-only)",
            "input-size": self.input_size,
            "tta": self.tta,
            "precision": self.precision,
        }


def run_test(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    splits: list[str],
    out: str | os.PathLike,
    options: TestOptions | None = None,
    rt: Runtime | None = None,
) -> dict[str, dict]:
    """Predict and score every split (``DIS-TE1``, ``DUTS-TE``, ``PATH:NAME``, ...: see
    :mod:`pdfnet.data.layout`); writes ``out/preds/<name>/``, ``out/<name>.json`` (with CSV and PNG),
    ``out/metrics.json`` and ``out/results.md``. Returns the metrics by split name (and ``TE-mean`` when all of
    DIS-TE1..4 were scored).

    Under ``torchrun`` (``rt`` from :func:`pdfnet.distributed.setup_runtime`) every process predicts its share of
    each split; once all predictions exist, rank 0 scores them and writes the results, and every process returns
    them: what one process computes.

    Raises:
        CheckpointError, DatasetError, OutputError, EvaluationError: naming the file or folder at fault, before
            any prediction where they can be found out first.
    """
    o = options or TestOptions()
    rt = rt or Runtime(resolve_device(o.device))
    # the network first: whether it reads depth maps decides which files the splits need
    model = everywhere(lambda: load_pdfnet(checkpoint, variant=o.variant), rt)
    depth_folder = o.depth_folder if model.use_depth else None

    def check() -> tuple[Path, dict, dict]:
        folder, found, files = check_writable_folder(out), {}, {}
        for spec in splits:  # every split's images, masks and depth maps exist before the long work starts
            split = find_split(data_root, spec)
            if split.name in found:
                raise DatasetError(
                    f"two splits named {split.name} ({found[split.name].spec}, {spec}): their results would mix"
                )
            files[split.name] = _split_files(data_root, spec, depth_folder)
            found[split.name] = split
        if not o.overwrite:  # a rerun predicts what is missing; predictions made otherwise would mix in the scores
            files = _missing_predictions(folder, files, o.record(checkpoint, model.use_depth))
        return folder, found, files

    out, found, files = on_main(check, rt)  # rank 0's view of the files, for every process
    record = make_record("test", o.record(checkpoint, model.use_depth))

    def predict_all() -> str:
        if not any(files.values()):  # every prediction exists, made with these options: only score them
            return model.variant
        predictor = Predictor(model, None, device=rt.device, precision=o.precision, input_size=o.input_size, tta=o.tta)
        for name, split in found.items():
            pred_dir = out / "preds" / name
            predict_split(
                predictor,
                data_root,
                split.spec,
                pred_dir,
                o.batch_size,
                o.depth_folder,
                o.loader_workers,
                rt,
                files[name],
                record,
            )
        return model.variant

    def score_all() -> dict[str, dict]:
        results: dict[str, dict] = {}
        for name, split in found.items():
            pred_dir = out / "preds" / name
            summary, scores = evaluate_predictions(
                pred_dir, split.mask_files(), o.workers, o.cache_dir, desc=f"score {name}"
            )
            write_results(summary, scores, out / f"{name}.json")
            results[name] = summary
        mean = te_mean(results)
        if mean is not None:
            results["TE-mean"] = mean
        write_text_atomic(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        table = markdown_table(results, checkpoint=str(checkpoint), tta=o.tta, variant=variant)
        write_text_atomic(out / "results.md", table)
        print(table)
        return results

    with held_by_main(FolderLock(out, "test"), rt):
        variant = all_ranks(predict_all, rt)[0]  # every prediction exists from here on
        # rank 0 scores; the others wait, so that all end alike (exit status included)
        results = on_main(score_all, rt)
    return results


def _missing_predictions(
    out: Path, files: dict[str, list[tuple[Path, Path]]], options: dict[str, object]
) -> dict[str, list[tuple[Path, Path]]]:
    """The (image, depth map) pairs of each split whose prediction is not in ``out/preds/<split>/`` yet.

    Raises:
        OutputError: some predictions there were made with other options (or hold no record of them): scored
            with this run's, they would mix two models' results; one line per folder.
    """
    pairs = {
        name: {out / "preds" / name / f"{image.stem}.png": (image, depth) for image, depth in split}
        for name, split in files.items()
    }
    existing = sort_existing((target, options) for targets in pairs.values() for target in targets)
    if existing.stale():
        lines = report_lines(existing, "prediction", "they would be scored with this run's: --overwrite redoes them")
        raise OutputError("; ".join(lines))
    done = set(existing.same)
    return {name: [pair for target, pair in targets.items() if target not in done] for name, targets in pairs.items()}


def markdown_table(results: dict[str, dict], checkpoint: str, tta: bool, variant: str) -> str:
    """One table per dataset (DIS-5K, DUTS, HRSOD, ...; the TE mean with DIS-5K): rows are its splits, columns
    the metrics DIS papers report; under them, for the splits the PDFNet paper scored, its published numbers
    (:mod:`pdfnet.evaluation.published`) and this run's difference from them."""
    lines = [
        f"PDFNet ({variant}) `{checkpoint}`, test-time augmentation: {'yes' if tta else 'no'}. "
        "maxFm is the maximum of the mean per-image F curve (beta^2 = 0.3; the DIS and BiRefNet convention); "
        "maxFm_pr the maximum of F from the mean precision and recall curves (the PDFNet code's convention); "
        "HCE at relax 5, epsilon 2.",
    ]
    by_dataset: dict[str, list[str]] = {}
    for split in results:
        by_dataset.setdefault(dataset_of("DIS-TE1" if split == "TE-mean" else split), []).append(split)
    shown: list[PublishedScores] = []
    for dataset, names in by_dataset.items():
        lines += ["", f"### {dataset}", "", "| split | " + " | ".join(TABLE_KEYS) + " | n |"]
        lines.append("|---|" + "---|" * (len(TABLE_KEYS) + 1))
        for split in names:
            r = results[split]
            cells = [f"{r[k]:.1f}" if k == "HCE" else f"{r[k]:.4f}" for k in TABLE_KEYS]
            lines.append(f"| {split} | " + " | ".join(cells) + f" | {r['n']} |")
        for paper in PUBLISHED:
            for split in (s for s in names if s in paper.scores):
                published = paper.scores[split]
                cells = [f"{published[k]:.3f}" if k in published else "" for k in TABLE_KEYS]
                lines.append(f"| {split}, {paper.label} | " + " | ".join(cells) + " | |")
                cells = [f"{results[split][k] - published[k]:+.3f}" if k in published else "" for k in TABLE_KEYS]
                lines.append(f"| {split}, this run - {paper.label} | " + " | ".join(cells) + " | |")
                if paper not in shown:
                    shown.append(paper)
    if shown:
        lines += [
            "",
            "Published: "
            + "; ".join(f"{paper.label}: {paper.source}" for paper in shown)
            + ". Their maxF is maxFm_pr (the authors' metric_tools/soc_metrics.py computes F from the mean "
            "precision and recall curves) and their E meanEm; they use test-time augmentation; HRSOD-TE and "
            "UHRSD-TE are the model trained on HRSOD-TR and UHRSD-TR.",
        ]
    return "\n".join(lines) + "\n"
