"""``pdfnet predict``: images and videos in, masks and cutouts out; one bad file never stops the rest, finished
outputs are kept (a rerun continues where an interrupted one stopped) and inputs are never overwritten.

A video's frames are predicted in batches, each frame on its own (there is no temporal model), and written as a
grey ``<stem>_mask.mp4`` and a VP9-with-alpha ``<stem>_rgba.webm`` with the input's frame count, size, timestamps
and (in the WebM) audio.

With ``--tta --uncertainty`` every image also gets ``<stem>_uncertainty.png`` (how much the six test-time passes
disagree: :mod:`pdfnet.inference.uncertainty`) holding its scores, and the folder an ``uncertainty.csv`` of every
such image, least certain first; a video gets ``<stem>_uncertainty.csv``, the scores of each frame."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutputError, PDFNetError
from ..hub import DEFAULT_DEPTH_MODEL, LICENSE_NOTE
from ..io import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    FolderLock,
    check_writable_folder,
    example_image,
    expand_inputs,
    read_gray,
    read_image,
    write_image_atomic,
)
from .options import add_depth_kind_option, add_device_options, input_size_or_auto, positive_int

if TYPE_CHECKING:
    import numpy as np

    from ..distributed import Runtime
    from ..inference.predictor import Predictor

HELP = "cut the main object out of images and videos"
FORMATS = ("rgba", "mask", "both")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Cut the main object out of photos and videos: RGBA cutouts or 8-bit masks at each input's size. Videos "
        f"({', '.join(VIDEO_SUFFIXES)}) become <stem>_mask.mp4 and <stem>_rgba.webm (VP9 with alpha, with the "
        "audio), each frame predicted on its own."
    )
    p.epilog = LICENSE_NOTE
    p.add_argument(
        "inputs", nargs="*", help="image or video files, folders or glob patterns (default: the bundled example)"
    )
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--format", choices=FORMATS, default="rgba", dest="fmt", help="rgba (default), mask or both")
    add_model_options(p, "images or video frames per forward pass")
    p.add_argument("--tta", action="store_true", help="the authors' test-time augmentation (flips x 3 scales)")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="with --tta: also write <stem>_uncertainty.png, how much the six passes disagree (their standard "
        "deviation, 0.5 -> 255), and uncertainty.csv, every image's scores, least certain first (videos: "
        "<stem>_uncertainty.csv, a row per frame)",
    )
    p.add_argument(
        "--output-processing-res",
        action="store_true",
        help="write masks (cutouts, uncertainty) at the network's processing resolution: the aspect kept, the "
        "longer side the input size (default: each input's size)",
    )
    p.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        help="RGBA: keep the photo's colours where the mask is soft (default: estimate the foreground's colours, "
        "so that no fringe of the old background shows)",
    )
    add_overwrite_option(p)
    add_device_options(p)


def add_model_options(p: argparse.ArgumentParser, batch_help: str) -> None:
    """The weights, depth and input-size flags that ``predict`` and ``label`` share."""
    p.add_argument(
        "--weights",
        help="base (default: the authors' DIS-5K model from the Hub), general, a checkpoint file, or a graph of "
        "pdfnet export (.onnx, run by ONNX Runtime)",
    )
    p.add_argument("--variant", choices=["release", "cvpr"], help="version of an authors'-layout checkpoint")
    p.add_argument(
        "--depth-model",
        default=DEFAULT_DEPTH_MODEL,
        help="Depth-Anything-V2: small (Apache-2.0), base, large (default; both CC-BY-NC-4.0); or any transformers "
        "depth estimator: a repo id or folder",
    )
    add_depth_kind_option(p)
    p.add_argument("--depth", help="folder of ready-made depth maps named by input stem (skips the depth model)")
    p.add_argument("--batch-size", type=positive_int, default=1, help=batch_help)
    p.add_argument(
        "--input-size",
        type=input_size_or_auto,
        default=None,
        help="the side images are resized to for the network: a multiple of 256; 1024 (default) is what the "
        "model was trained at; auto: each image's longer side rounded to a multiple of 256, at most 2048 "
        "(auto:N: at most N), which costs more for large photos. Outputs have each input's size",
    )


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo outputs that already exist (default: skip those made with the same options, keep and name those "
        "made otherwise)",
    )


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_names(stem: str, fmt: str, video: bool = False, uncertainty: bool = False) -> dict[str, str]:
    """``<stem>.png`` for one format; ``<stem>_mask.png`` and ``<stem>_rgba.png`` for both. A video's are always
    ``<stem>_mask.mp4`` and ``<stem>_rgba.webm``. With ``uncertainty``, also ``<stem>_uncertainty.png`` (a
    video: ``<stem>_uncertainty.csv``)."""
    if video:
        names = {"mask": f"{stem}_mask.mp4", "rgba": f"{stem}_rgba.webm"}
        names = names if fmt == "both" else {fmt: names[fmt]}
    elif fmt == "both":
        names = {"mask": f"{stem}_mask.png", "rgba": f"{stem}_rgba.png"}
    else:
        names = {fmt: f"{stem}.png"}
    if uncertainty:
        names["uncertainty"] = f"{stem}_uncertainty.{'csv' if video else 'png'}"
    return names


def plan_outputs(inputs: list[Path], out_dir: Path, fmt: str, uncertainty: bool = False) -> dict[Path, dict[str, Path]]:
    """Every input's output files. Raises OutputError, before any work, when an output would replace an input,
    the output folder is an input's folder, or two inputs would write the same file."""
    out_resolved = out_dir.resolve()
    input_dirs = {p.resolve().parent for p in inputs}
    if out_resolved in input_dirs:
        raise OutputError(f"--out {out_dir} is a folder of inputs: its outputs would mix with them; choose another")
    plan, owners = {}, {}
    for path in inputs:
        names = output_names(path.stem, fmt, is_video(path), uncertainty)
        files = {kind: out_dir / name for kind, name in names.items()}
        for target in files.values():
            other = owners.setdefault(target.resolve(), path)
            if other != path:
                raise OutputError(
                    f"{other} and {path} would both be written to {target} (same name); run them separately with "
                    "different --out folders, or rename one"
                )
        plan[path] = files
    return plan


def check_sources(args: argparse.Namespace) -> None:
    """Check that the published weights and the depth model can be had (cached, local or the Hub reachable):
    offline, the error comes within seconds, before the network's libraries load."""
    from ..hub import PRETRAINED, check_depth_model_source, download_weights
    from ..model.state_dict import check_weight_file

    weights = args.weights or "base"
    if weights in PRETRAINED and not Path(weights).exists():
        download_weights(weights)
    elif not weights.endswith(".onnx"):  # a graph is checked by ONNX Runtime as it loads
        check_weight_file(weights)
    if not args.depth and reads_depth(args):
        check_depth_model_source(args.depth_model)


def reads_depth(args: argparse.Namespace) -> bool:
    """Whether the network of ``--weights`` reads depth (false for an RGB-only checkpoint, whose outputs then
    record no depth model and for which none is looked for or loaded), told without loading it."""
    weights = args.weights or "base"
    if weights.endswith(".onnx") or not Path(weights).is_file():  # published weights and graphs read depth
        return True
    from ..model.checkpoint import weights_read_depth

    return weights_read_depth(weights)


def _load_predictor(args: argparse.Namespace, device: str | None):
    from ..hub import PRETRAINED
    from ..inference.predictor import Predictor

    depth_model = None if args.depth else args.depth_model
    options = dict(
        device=device, depth_model=depth_model, precision=args.precision, input_size=args.input_size, tta=args.tta
    )
    if args.depth_kind:
        options["depth_kind"] = args.depth_kind
    if options["input_size"] is None:  # the graph's own size for ONNX, else the paper's 1024
        options["input_size"] = None if (args.weights or "").endswith(".onnx") else 1024
    elif str(options["input_size"]).startswith("auto") and (args.weights or "").endswith(".onnx"):
        raise InputError(f"--input-size {args.input_size}: an ONNX graph has one fixed input size; leave it out")
    weights = args.weights or "base"
    if weights.endswith(".onnx"):  # a graph of pdfnet export, run by ONNX Runtime
        del options["device"]
        return Predictor.from_onnx(weights, **options)
    if weights in PRETRAINED and not Path(weights).exists():
        return Predictor.from_pretrained(weights, **options)
    return Predictor.from_checkpoint(weights, variant=args.variant, **options)


def _read_depth(folder: str, image_path: Path, shape: tuple[int, ...]):
    from ..data.layout import find_by_stem

    path = find_by_stem(Path(folder), image_path.stem)
    if path is None:
        raise InputError(f"no depth map for {image_path} in {folder} (looked for {image_path.stem}.png/.jpg)")
    depth = read_gray(path)
    if depth.shape != tuple(shape[:2]):
        raise InputError(
            f"depth map {path} is {depth.shape[1]}x{depth.shape[0]} but {image_path} is {shape[1]}x{shape[0]}"
        )
    return depth


def run(args: argparse.Namespace) -> int:
    """Run ``pdfnet predict``; returns the exit status (1 if any input failed). Under ``torchrun`` every process
    predicts its own share of the inputs; rank 0 plans, holds the folder's lock and prints the summary."""
    from ..distributed import process_group

    with process_group(args.device) as rt:
        return _run(args, rt)


@dataclass
class Plan:
    """What a ``predict`` run will do, decided by rank 0 before any work.

    Attributes:
        n_inputs: how many inputs were given (after expanding folders and patterns).
        out_dir: the output folder.
        files: every input's output files by kind (``mask``, ``rgba``).
        todo: the inputs to predict.
        skipped: how many inputs are done already, with this run's options.
        kept: lines about outputs made otherwise and kept (without ``--overwrite``).
    """

    n_inputs: int
    out_dir: Path
    files: dict[Path, dict[str, Path]]
    todo: list[Path]
    skipped: int
    kept: list[str]


def output_options(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The options that change each kind of output (recorded in it, compared on a rerun: pdfnet.provenance).
    Weight files and model folders are named by their content. Options added since outputs were first recorded
    appear only when they are not the default, so that outputs made before they existed still count as made
    alike."""
    from ..provenance import depth_model_identity, fingerprint

    weights = args.weights or "base"
    if not reads_depth(args):
        depth = "none (RGB-only)"
    elif args.depth:
        depth = f"maps {Path(args.depth).resolve()}"
    else:
        depth = f"model {depth_model_identity(args.depth_model)}"
    if args.depth_kind and reads_depth(args) and not args.depth:
        depth += f" ({args.depth_kind})"  # only when given: the family's own kind keeps earlier records valid
    common = {
        "weights": fingerprint(weights) if Path(weights).is_file() else weights,
        "variant": args.variant or "auto",
        "depth": depth,
        "input-size": args.input_size or ("graph" if weights.endswith(".onnx") else 1024),
        "tta": args.tta,
        "precision": args.precision,
    }
    if getattr(args, "output_processing_res", False):
        common["output-res"] = "processing"
    return {
        "mask": {"output": "mask", **common},
        "rgba": {"output": "rgba", **common, "refine": args.refine},
        "uncertainty": {"output": "uncertainty", **common},
    }


def _plan(args: argparse.Namespace) -> Plan:
    """The run's plan, checked before any work: the inputs exist, the outputs can be written, and which are
    done (with the same options), to do, or kept (made otherwise, without ``--overwrite``)."""
    from ..provenance import report_lines, sort_existing

    if args.uncertainty and not args.tta:
        raise InputError("--uncertainty needs --tta: it measures how much the six passes of --tta disagree; add --tta")
    inputs = list(expand_inputs(args.inputs, IMAGE_SUFFIXES + VIDEO_SUFFIXES)) if args.inputs else [example_image()]
    if not inputs:
        raise InputError(f"no images or videos in {' '.join(args.inputs)}")
    out_dir = check_writable_folder(args.out)
    files = plan_outputs(inputs, out_dir, args.fmt, args.uncertainty)
    if args.overwrite:
        return Plan(len(inputs), out_dir, files, inputs, 0, [])
    options = output_options(args)
    existing = sort_existing((f, options[kind]) for p in inputs for kind, f in files[p].items())
    same, stale = set(existing.same), set(existing.stale())
    todo = [p for p in inputs if not any(f in stale for f in files[p].values())]
    done = [p for p in todo if all(f in same for f in files[p].values())]
    todo = [p for p in todo if p not in done]
    return Plan(len(inputs), out_dir, files, todo, len(done), report_lines(existing))


def _run(args: argparse.Namespace, rt: Runtime) -> int:
    from ..distributed import all_ranks, held_by_main, on_main, shard
    from ..provenance import make_record

    plan = on_main(lambda: _plan(args), rt)  # one view of the inputs and of what exists, rank 0's, for every process
    if rt.is_main:
        for line in plan.kept:
            print(f"note: {line}", file=sys.stderr)
    if not plan.todo:
        if rt.is_main and args.uncertainty:
            with FolderLock(plan.out_dir, "predict"):
                write_uncertainty_summary(plan.out_dir)
        if rt.is_main:
            kept = f", {plan.n_inputs - plan.skipped} made otherwise" if plan.skipped < plan.n_inputs else ""
            print(
                f"all {plan.n_inputs} output(s) already exist in {plan.out_dir}{kept}; nothing to do "
                "(--overwrite redoes them)"
            )
        return 0
    on_main(lambda: check_sources(args), rt)  # before the network's libraries load: offline, the error is quick
    records = {kind: make_record("predict", options) for kind, options in output_options(args).items()}

    def work() -> tuple[int, list[str]]:
        mine, failed = shard(plan.todo, rt), []
        if not mine:
            return 0, failed
        predictor = _load_predictor(args, str(rt.device) if rt.distributed else args.device)
        if not predictor.uses_depth and rt.is_main:
            ignored = ", --depth is not read" if args.depth else ""
            print(
                f"note: an RGB-only PDFNet (model.use_depth=false): no depth model is loaded{ignored}", file=sys.stderr
            )
        images = [p for p in mine if not is_video(p)]
        written = _predict_images(predictor, images, plan.files, records, args, failed, rt.is_main) if images else 0
        for path in (p for p in mine if is_video(p)):
            try:
                _predict_video(predictor, path, plan.files[path], records, args, rt.is_main)
                written += 1
            except PDFNetError as e:
                failed.append(_named(e, path))
                print(f"error: {failed[-1]}", file=sys.stderr)
        return written, failed

    with held_by_main(FolderLock(plan.out_dir, "predict"), rt):
        outcomes = all_ranks(work, rt)
        if rt.is_main and args.uncertainty:
            write_uncertainty_summary(plan.out_dir)
    written = sum(n for n, _ in outcomes)
    failed = [message for _, messages in outcomes for message in messages]
    if rt.is_main:
        note = f"; {plan.skipped} already done, skipped (--overwrite redoes them)" if plan.skipped else ""
        processes = f" by {rt.world_size} processes" if rt.distributed else ""
        print(
            f"wrote {written} result(s) to {plan.out_dir}{processes}{note}"
            + (f"; {len(failed)} input(s) failed:" if failed else "")
        )
        for message in failed:
            print(f"  {message}", file=sys.stderr)
    return 1 if failed else 0


def _named(error: PDFNetError, path: Path) -> str:
    return str(error) if str(path) in str(error) else f"{path}: {error}"


def read_batches(
    predictor: Predictor, todo: list[Path], batch_size: int, depth_folder: str | None, failed: list[str], bar
) -> Iterator[tuple[list[Path], list[np.ndarray], list[np.ndarray | None]]]:
    """``todo`` read ``batch_size`` photos at a time, as (paths, RGB images, depth maps or None): the depth map
    from ``depth_folder`` where one is given and the network reads depth. A photo that cannot be read or used
    (a shape the depth model refuses) adds a line to ``failed``, is printed and counted on ``bar`` and left out;
    a batch left empty is not yielded."""
    from tqdm import tqdm

    for start in range(0, len(todo), batch_size):
        paths, images, depths = [], [], []
        for path in todo[start : start + batch_size]:
            try:
                image = read_image(path)
                depth = _read_depth(depth_folder, path, image.shape) if depth_folder and predictor.uses_depth else None
                if depth is None and predictor.depth_estimator is not None:
                    predictor.depth_estimator.input_shape(image)  # refuse unusable shapes up front
            except PDFNetError as e:
                failed.append(_named(e, path))
                tqdm.write(f"error: {failed[-1]}", file=sys.stderr)
                bar.update(1)
                continue
            paths.append(path)
            images.append(image)
            depths.append(depth)
        if paths:
            yield paths, images, depths


def _predict_images(
    predictor: Predictor,
    todo: list[Path],
    plan: dict[Path, dict[str, Path]],
    records: dict[str, dict[str, str]],
    args: argparse.Namespace,
    failed: list[str],
    progress: bool = True,
) -> int:
    """Masks and cutouts of ``todo``, ``--batch-size`` images at a time; returns how many were written and adds
    a line to ``failed`` for each image that could not be read or used."""
    from tqdm import tqdm

    from ..inference.predictor import to_rgba

    written = 0
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    for paths, images, depths in read_batches(predictor, todo, args.batch_size, args.depth, failed, bar):
        sizes = [predictor.processing_shape(im.shape) for im in images] if args.output_processing_res else None
        for path, image, result in zip(
            paths, images, predictor.predict_all(images, depths, uncertainty=args.uncertainty, sizes=sizes)
        ):
            files, mask = plan[path], result.mask
            if "mask" in files:
                write_image_atomic(files["mask"], mask, records["mask"])
            if "rgba" in files:
                colours = image if mask.shape == image.shape[:2] else resize_photo(image, mask.shape)
                write_image_atomic(files["rgba"], to_rgba(colours, mask, refine=args.refine), records["rgba"])
            if "uncertainty" in files:
                write_uncertainty(files["uncertainty"], result.uncertainty, records["uncertainty"])
            written += 1
            bar.update(1)
    bar.close()
    return written


def _predict_video(
    predictor: Predictor,
    path: Path,
    files: dict[str, Path],
    records: dict[str, dict[str, str]],
    args: argparse.Namespace,
    progress: bool = True,
) -> None:
    """Stream a video's frames through the network, ``--batch-size`` at a time, into its mask and RGBA videos
    (and, with ``--uncertainty``, the CSV of each frame's scores).

    Raises:
        PDFNetError: the video cannot be read (or used); its outputs are then not written at all.
    """
    from contextlib import ExitStack
    from dataclasses import replace

    import numpy as np
    from tqdm import tqdm

    from ..inference.foreground import refine_foreground
    from ..video import MaskVideoWriter, RgbaVideoWriter, open_video

    if args.depth and predictor.uses_depth:
        raise InputError(f"{path} is a video: --depth maps are for images; leave --depth out to use the depth model")
    rows = []  # (frame, seconds, scores) with --uncertainty
    with ExitStack() as stack:  # on an error the writers, left first, delete their temporary files
        reader = stack.enter_context(open_video(path))
        frame_shape = (reader.info.height, reader.info.width, 3)
        if predictor.depth_estimator is not None:
            predictor.depth_estimator.input_shape(np.empty(frame_shape, np.uint8))
        info, size = reader.info, None
        if args.output_processing_res:
            size = predictor.processing_shape(frame_shape)
            info = replace(reader.info, height=size[0], width=size[1])
        mask_out = rgba_out = None
        if "mask" in files:
            mask_out = stack.enter_context(MaskVideoWriter(files["mask"], info, metadata=records["mask"]))
        if "rgba" in files:
            rgba_out = stack.enter_context(RgbaVideoWriter(files["rgba"], info, metadata=records["rgba"]))
        bar = stack.enter_context(
            tqdm(total=reader.info.frame_count or None, desc=path.name, unit="frame", disable=not progress)
        )
        for batch in reader.batches(args.batch_size):
            frames = list(batch.frames)
            sizes = [size] * len(frames) if size else None
            results = predictor.predict_all(frames, uncertainty="uncertainty" in files, sizes=sizes)
            masks = np.stack([r.mask for r in results])
            if mask_out is not None:
                mask_out.write(masks, batch.pts, batch.durations)
            if rgba_out is not None:
                frames = [resize_photo(f, size) for f in frames] if size else frames
                colours = [refine_foreground(f, m) for f, m in zip(frames, masks)] if args.refine else frames
                rgba_out.write(np.asarray(colours), masks, batch.pts, batch.durations)
            for k, (result, pts) in enumerate(zip(results, batch.pts)):
                if result.uncertainty is not None:
                    rows.append((batch.start + k, float(pts * reader.info.time_base), result.uncertainty.scores))
            bar.update(len(batch))
        bar.total = bar.n  # the header's count can be off (edit lists, estimates)
        bar.refresh()
    if "uncertainty" in files:
        write_frame_scores(files["uncertainty"], rows, records["uncertainty"])
    for warning in reader.info.warnings + (rgba_out.warnings if rgba_out else []):
        print(f"warning: {path}: {warning}", file=sys.stderr)


def resize_photo(image, shape: tuple[int, ...]):
    """(H, W, 3) uint8 -> (h, w, 3) uint8 at ``shape``'s (h, w): PIL's bicubic (which antialiases when
    shrinking), the photo of a cutout at the processing resolution."""
    import numpy as np
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


def write_uncertainty(path: Path, uncertainty, record: dict[str, str]) -> None:
    """The 8-bit uncertainty map as a PNG whose text chunks hold its record and its scores."""
    from ..inference.uncertainty import SCORES_KEY

    write_image_atomic(path, uncertainty.map, {**record, SCORES_KEY: uncertainty.scores.to_json()})


FRAME_COLUMNS = ("frame", "time_s", "boundary_uncertainty", "image_uncertainty", "foreground_fraction")


def write_frame_scores(path: Path, rows: list, record: dict[str, str]) -> None:
    """A video's ``<stem>_uncertainty.csv``: its record as the first line (``# pdfnet: {...}``), then one row
    per frame in order (:data:`FRAME_COLUMNS`; an empty boundary where the mask has no edge)."""
    from ..io import write_text_atomic
    from ..provenance import csv_record_line

    lines = [csv_record_line(record), ",".join(FRAME_COLUMNS)]
    for frame, seconds, s in rows:
        boundary = "" if s.boundary is None else f"{s.boundary:.6f}"
        lines.append(f"{frame},{seconds:.6f},{boundary},{s.overall:.6f},{s.foreground:.6f}")
    write_text_atomic(path, "\n".join(lines) + "\n")


UNCERTAINTY_SUMMARY = "uncertainty.csv"


def write_uncertainty_summary(out_dir: Path) -> int:
    """``uncertainty.csv`` in ``out_dir``: the scores of every ``<stem>_uncertainty.png`` there (this run's and
    earlier ones'), least certain first; rebuilt from the files at the end of every run. Returns the rows."""
    from ..inference.uncertainty import csv_text, read_scores
    from ..io import list_images, write_text_atomic

    rows = []
    for path in list_images(out_dir, (".png",)):
        if path.stem.endswith("_uncertainty"):
            scores = read_scores(path)
            if scores is not None:
                rows.append((path.stem.removesuffix("_uncertainty"), scores, {"file": path.name}))
    if rows:
        write_text_atomic(out_dir / UNCERTAINTY_SUMMARY, csv_text(rows, extra=("file",)))
    return len(rows)
