"""``pdfnet label``: turn photos into a dataset that training and testing read, with the masks most worth
checking listed first.

``DATASET/`` gets ``images/`` (the photos, hard-linked where the file system allows, else copied: never moved or
changed), ``masks/<stem>.png`` (the masks of the authors' test-time augmentation), ``uncertainty/<stem>.png``
(how much its six passes disagree, :mod:`pdfnet.inference.uncertainty`), ``depth_large/<stem>.png`` (the
pseudo-depth the network read, as ``pdfnet depth`` writes it), ``scores.csv`` (one row per image, least certain
first) and ``review.html`` with its thumbnails in ``review_files/`` (:mod:`pdfnet.review`). Every mask, map and
depth map records what made it; a rerun does only what is missing (the same options), keeps what other options
made (naming it), and ``--overwrite`` redoes it. Under ``torchrun`` each process labels its share.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError, PDFNetError
from ..hub import LICENSE_NOTE
from ..io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FolderLock, check_writable_folder, expand_inputs, read_image
from .options import add_device_options
from .predict import add_model_options, add_overwrite_option

if TYPE_CHECKING:
    from ..distributed import Runtime
    from ..inference.predictor import Predictor

HELP = "label photos into a dataset (images/, masks/, depth), least certain masks first for review"
EXAMPLES = """examples:
  pdfnet label photos/ --out labelled/                              # review labelled/review.html
  pdfnet label photos/ more/*.jpg --out labelled/ --copy --device cuda --batch-size 4
  torchrun --standalone --nproc_per_node 8 -m pdfnet label photos/ --out labelled/
  python train.py --config configs/pdfnet_dis5k.yaml data.root=labelled "data.train_sets=[.:labelled]" \\
      data.val_split=.:labelled data.train_depths=[depth_large] data.target_depth=depth_large"""

IMAGES, MASKS, UNCERTAINTY = "images", "masks", "uncertainty"
SCORES, REVIEW = "scores.csv", "review.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Label photos with the authors' test-time augmentation (six passes) into DATASET: images/ (the photos, "
        "hard-linked, or copied across file systems or with --copy), masks/, uncertainty/ (how much the passes "
        "disagree), depth_large/ (the pseudo-depth), scores.csv and review.html, least certain first. A rerun "
        "does only what is missing."
    )
    p.epilog = EXAMPLES + "\n\n" + LICENSE_NOTE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="the dataset folder (created; never an input's folder)")
    p.add_argument(
        "--copy",
        action="store_true",
        help="copy the photos into images/ (default: hard links, which take no space; copies where the file "
        "system cannot link)",
    )
    p.add_argument("--no-depth", dest="write_depth", action="store_false", help="do not keep the pseudo-depth maps")
    p.add_argument(
        "--depth-name",
        help="the depth maps' folder (default: depth_small, depth_base or depth_large after --depth-model; "
        "depth_large for other models)",
    )
    add_model_options(p, "images per forward pass")
    add_overwrite_option(p)
    add_device_options(p)
    # what predict's shared helpers read: labels always come from the six passes, as masks without refinement
    p.set_defaults(tta=True, refine=False, fmt="mask", output_processing_res=False, uncertainty=True)


def depth_folder_name(args: argparse.Namespace) -> str:
    """Where the pseudo-depth maps go: ``--depth-name``, else named after a published depth model."""
    from ..hub import DEPTH_MODELS, resolve_depth_model

    if args.depth_name:
        return args.depth_name
    name = resolve_depth_model(args.depth_model)
    return next((f"depth_{short}" for short, repo in DEPTH_MODELS.items() if repo == name), "depth_large")


def label_files(out_dir: Path, image: Path, depth_folder: str | None) -> dict[str, Path]:
    """Where one photo's files go in the dataset, by kind: ``image`` keeps the photo's name, the others are
    ``<stem>.png``."""
    stem = image.stem
    files = {
        "image": out_dir / IMAGES / image.name,
        "mask": out_dir / MASKS / f"{stem}.png",
        "uncertainty": out_dir / UNCERTAINTY / f"{stem}.png",
    }
    if depth_folder:
        files["depth"] = out_dir / depth_folder / f"{stem}.png"
    return files


def record_options(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """What each kind of file records (pdfnet.provenance): predict's options for masks and uncertainty maps, and
    for depth maps what ``pdfnet depth`` records, so that it skips them."""
    from ..provenance import depth_model_identity
    from .predict import output_options

    options = output_options(args)
    depth = {"model": depth_model_identity(args.depth_model), "input-size": 518, "format": "png8"}
    return {
        "mask": options["mask"],
        "uncertainty": options["uncertainty"],
        "depth": {**depth, "precision": args.precision},
    }


@dataclass
class LabelPlan:
    """What a ``label`` run will do, decided by rank 0 before any work.

    Attributes:
        n_inputs: photos given (after expanding folders and patterns).
        out_dir: the dataset folder.
        files: each photo's files by kind (:func:`label_files`).
        todo: the photos to label.
        skipped: photos labelled already, with this run's options.
        kept: lines about files made otherwise and kept (without ``--overwrite``).
        failed: inputs refused before any work (videos, names taken), as error lines.
    """

    n_inputs: int
    out_dir: Path
    files: dict[Path, dict[str, Path]]
    todo: list[Path]
    skipped: int = 0
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _check_places(inputs: list[Path], out_dir: Path, depth_folder: str | None) -> None:
    """OutputError when the dataset or one of its folders is a folder of inputs, or two photos share a stem."""
    folders = [out_dir, *(out_dir / name for name in (IMAGES, MASKS, UNCERTAINTY, depth_folder) if name)]
    input_dirs = {p.resolve().parent for p in inputs}
    for folder in folders:
        if folder.resolve() in input_dirs:
            raise OutputError(
                f"{folder} is a folder of inputs: the dataset would write among them; choose another --out"
            )
    owners: dict[str, Path] = {}
    for path in inputs:
        other = owners.setdefault(path.stem, path)
        if other != path:
            raise OutputError(
                f"{other} and {path} would both be labelled {path.stem} (masks are named by stem); rename one, or "
                "label them into different datasets"
            )


def _plan(args: argparse.Namespace) -> LabelPlan:
    """The run's plan, checked before any work: the inputs exist, the dataset can be written, and which photos
    are done (with the same options), to do, or kept (labelled otherwise, without ``--overwrite``)."""
    from ..io import list_images, same_file
    from ..provenance import report_lines, sort_existing

    if (args.weights or "").endswith(".onnx"):
        raise InputError(
            f"{args.weights}: label needs test-time augmentation (its six passes at three sizes), which an ONNX "
            "graph of one fixed size cannot run; give a checkpoint"
        )
    found = list(expand_inputs(args.inputs, IMAGE_SUFFIXES))
    videos = [p for p in found if p.suffix.lower() in VIDEO_SUFFIXES]
    inputs = [p for p in found if p not in videos]
    if not found:
        raise InputError(f"no images in {' '.join(args.inputs)}")
    out_dir = check_writable_folder(args.out)
    depth_folder = depth_folder_name(args) if args.write_depth and not args.depth else None
    _check_places(inputs, out_dir, depth_folder)
    failed = [f"{p}: a video; label takes photos (extract its frames first)" for p in videos]
    files = {p: label_files(out_dir, p, depth_folder) for p in inputs}
    # a photo whose name in images/ is taken by another file of the same stem (x.png beside a new x.jpg)
    labelled = {p.stem: p for p in list_images(out_dir / IMAGES)} if (out_dir / IMAGES).is_dir() else {}
    for p in list(inputs):
        other = labelled.get(p.stem)
        if other is not None and other.name != p.name:
            failed.append(f"{p}: {other} is another photo named {p.stem} in the dataset; remove it, or rename {p}")
            inputs.remove(p)
    if args.overwrite:
        return LabelPlan(len(found), out_dir, files, inputs, failed=failed)
    options = record_options(args)
    existing = sort_existing((f, options[kind]) for p in inputs for kind, f in files[p].items() if kind != "image")
    same, stale = set(existing.same), set(existing.stale())
    other_photo = [p for p in inputs if files[p]["image"].exists() and not same_file(p, files[p]["image"])]
    kept = report_lines(existing, noun="label file")
    if other_photo:
        folder = out_dir / IMAGES
        kept.append(
            f"{folder}: {len(other_photo)} photo(s) differ from the input of the same name (e.g. {other_photo[0]}); "
            "kept with their labels, --overwrite replaces them"
        )
    todo = [p for p in inputs if p not in other_photo and not any(f in stale for f in files[p].values())]
    done = [
        p for p in todo if files[p]["image"].exists() and all(f in same for k, f in files[p].items() if k != "image")
    ]
    todo = [p for p in todo if p not in done]
    return LabelPlan(len(found), out_dir, files, todo, len(done), kept, failed)


def run(args: argparse.Namespace) -> int:
    """Run ``pdfnet label``; returns the exit status (1 if any input failed). Under ``torchrun`` every process
    labels its own share; rank 0 plans, holds the dataset's lock, writes the scores and the page."""
    from ..distributed import process_group

    with process_group(args.device) as rt:
        return _run(args, rt)


@dataclass
class Outcome:
    """What one process did: photos labelled, of them linked and copied, and error lines."""

    labelled: int = 0
    linked: int = 0
    copied: int = 0
    failed: list[str] = field(default_factory=list)


def _run(args: argparse.Namespace, rt: Runtime) -> int:
    from ..distributed import all_ranks, held_by_main, on_main, shard
    from ..provenance import make_record
    from .predict import _load_predictor, check_sources

    plan = on_main(lambda: _plan(args), rt)
    if rt.is_main:
        for line in plan.kept:
            print(f"note: {line}", file=sys.stderr)
        for line in plan.failed:
            print(f"error: {line}", file=sys.stderr)
    if plan.todo:
        on_main(lambda: check_sources(args), rt)  # offline, the error comes before the libraries load
    records = {
        kind: make_record("depth" if kind == "depth" else "label", o) for kind, o in record_options(args).items()
    }

    def work() -> Outcome:
        mine, outcome = shard(plan.todo, rt), Outcome()
        if mine:
            predictor = _load_predictor(args, str(rt.device) if rt.distributed else args.device)
            _label_images(predictor, mine, plan.files, records, args, outcome, rt.is_main)
        return outcome

    with held_by_main(FolderLock(plan.out_dir, "label"), rt):
        outcomes = all_ranks(work, rt) if plan.todo else [Outcome()]
        rows = write_summaries(plan.out_dir) if rt.is_main else 0
    if rt.is_main:
        _report(plan, outcomes, rows, rt)
    failed = plan.failed + [line for o in outcomes for line in o.failed]
    return 1 if failed else 0


def _report(plan: LabelPlan, outcomes: list[Outcome], rows: int, rt: Runtime) -> None:
    labelled = sum(o.labelled for o in outcomes)
    linked, copied = sum(o.linked for o in outcomes), sum(o.copied for o in outcomes)
    how = ", ".join(f"{n} {what}" for n, what in ((linked, "linked"), (copied, "copied")) if n)
    done = f"; {plan.skipped} already labelled, skipped (--overwrite redoes them)" if plan.skipped else ""
    processes = f" by {rt.world_size} processes" if rt.distributed else ""
    print(f"labelled {labelled} photo(s) into {plan.out_dir}{processes}" + (f" ({how})" if how else "") + done)
    failed = [line for o in outcomes for line in o.failed] + plan.failed
    if failed:
        print(f"{len(failed)} input(s) failed:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
    if rows:
        review = plan.out_dir / REVIEW
        print(f"{rows} image(s) scored in {plan.out_dir / SCORES}; review them, least certain first: {review}")


def _label_images(
    predictor: Predictor,
    todo: list[Path],
    files: dict[Path, dict[str, Path]],
    records: dict[str, dict[str, str]],
    args: argparse.Namespace,
    outcome: Outcome,
    progress: bool,
) -> None:
    """Label ``todo``, ``--batch-size`` photos at a time: each photo's mask, uncertainty, depth and thumbnails are
    written, then the photo is linked or copied into ``images/`` last, so that a photo in the dataset always
    has its mask (an interrupted run leaves at most files that a rerun redoes)."""
    from tqdm import tqdm

    from ..io import link_or_copy, write_image_atomic
    from ..review import THUMBNAIL_FOLDER, write_thumbnails
    from .predict import read_batches, write_uncertainty

    bar = tqdm(total=len(todo), desc="label", unit="img", disable=not progress)
    for paths, images, depths in read_batches(predictor, todo, args.batch_size, args.depth, outcome.failed, bar):
        for path, image, result in zip(paths, images, predictor.predict_all(images, depths, uncertainty=True)):
            target = files[path]
            write_image_atomic(target["mask"], result.mask, records["mask"])
            write_uncertainty(target["uncertainty"], result.uncertainty, records["uncertainty"])
            if "depth" in target:
                write_image_atomic(target["depth"], result.depth, records["depth"])
            folder = target["image"].parent.parent / THUMBNAIL_FOLDER
            write_thumbnails(folder, path.stem, image, result.mask, result.uncertainty.map)
            how = link_or_copy(path, target["image"], copy=args.copy)
            outcome.labelled += 1
            outcome.linked += how == "linked"
            outcome.copied += how == "copied"
            bar.update(1)
    bar.close()


def write_summaries(out_dir: Path) -> int:
    """``scores.csv`` and ``review.html`` of every labelled photo in the dataset (this run's and earlier runs'):
    those in ``images/`` with a mask and an uncertainty map; thumbnails missing from ``review_files/`` are
    made from the files. Rebuilt at the end of every run. Returns the number of rows."""
    from ..inference.uncertainty import csv_text, read_scores, score
    from ..io import list_images, read_gray, write_text_atomic
    from ..review import THUMBNAIL_FOLDER, ReviewRow, thumbnail_names, write_review, write_thumbnails

    images = {p.stem: p for p in list_images(out_dir / IMAGES)} if (out_dir / IMAGES).is_dir() else {}
    rows, csv_rows = [], []
    for stem, image in sorted(images.items()):
        mask, uncertainty = out_dir / MASKS / f"{stem}.png", out_dir / UNCERTAINTY / f"{stem}.png"
        if not (mask.is_file() and uncertainty.is_file()):
            continue
        scores = read_scores(uncertainty)
        thumbs = [out_dir / THUMBNAIL_FOLDER / name for name in thumbnail_names(stem).values()]
        try:
            if scores is None:  # a map without its scores (written by another tool): measured from the files
                scores = score(read_gray(mask), read_gray(uncertainty))
            if not all(t.is_file() for t in thumbs):
                write_thumbnails(
                    out_dir / THUMBNAIL_FOLDER, stem, read_image(image), read_gray(mask), read_gray(uncertainty)
                )
        except (PDFNetError, ValueError) as e:
            print(f"warning: {stem} left out of the review: {e}", file=sys.stderr)
            continue
        relative = {
            k: p.relative_to(out_dir).as_posix()
            for k, p in (("image", image), ("mask", mask), ("uncertainty", uncertainty))
        }
        rows.append(ReviewRow(stem, relative["image"], relative["mask"], relative["uncertainty"], scores))
        csv_rows.append((stem, scores, relative))
    if not rows:
        return 0
    write_text_atomic(out_dir / SCORES, csv_text(csv_rows, extra=("image", "mask", "uncertainty")))
    write_review(out_dir / REVIEW, rows, f"{out_dir.resolve().name}: {len(rows)} labels to review")
    return len(rows)
