"""The comparison table papers print: several methods' predictions scored over several splits in one run.

``pdfnet evaluate --pred NAME=DIR --pred NAME=DIR ... --gt DIR --splits S1 S2 --out FOLDER`` scores every
(method, split) with :func:`pdfnet.evaluation.folders.evaluate_predictions` (``{split}`` in a folder stands for
the split's name) and writes into FOLDER:

- ``results.md``: one table per split, a row per method, the DIS papers' metrics (maxFm, wFm, MAE, Sm, meanEm,
  HCE) and Boundary IoU (maxBIoU, meanBIoU), the best of each column in bold;
- ``results.csv``: one row per (method, split) with every metric;
- ``results.tex``: the same table for LaTeX (booktabs; a block per split, best in ``\\textbf``);
- ``pr_<split>.png``: every method's precision-recall and F-versus-threshold curves on that split;
- ``metrics.json``: every summary, by method and split;
- ``scores/<method>/<split>.json``: each (method, split)'s summary and mean curves, kept so that a rerun scores
  only what changed (a new method, a prediction or mask file replaced): they are reused while the listing of
  both folders (names, sizes, modification times) is the same.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EvaluationError, PDFNetError
from ..io import FolderLock, atomic_path, check_writable_folder, is_listed, write_text_atomic

TABLE_METRICS = ("maxFm", "wFm", "MAE", "Sm", "meanEm", "HCE", "maxBIoU", "meanBIoU")
LOWER_IS_BETTER = frozenset({"MAE", "HCE"})
# every number of a summary, in the CSV's order (pdfnet.evaluation.folders.METRIC_KEYS without n)
CSV_METRICS = ("maxFm", "meanFm", "adpFm", "maxFm_pr", "wFm", "MAE", "Sm", "meanEm", "maxEm", "adpEm", "HCE")
CSV_METRICS += ("maxBIoU", "meanBIoU")
TE_SPLITS = ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
TE_MEAN = "TE-mean"
SPLIT = "{split}"
LATEX_HEADS = {
    "maxFm": r"$F_\beta^{\max}\uparrow$",
    "wFm": r"$F_\beta^{\omega}\uparrow$",
    "MAE": r"$\mathcal{M}\downarrow$",
    "Sm": r"$S_\alpha\uparrow$",
    "meanEm": r"$E_\phi^{m}\uparrow$",
    "HCE": r"$HCE_\gamma\downarrow$",
    "maxBIoU": r"BIoU$^{\max}\uparrow$",
    "meanBIoU": r"BIoU$^{m}\uparrow$",
}
CONVENTIONS = (
    "maxFm: maximum of the mean per-image F curve (beta^2 = 0.3, 256 thresholds; the DIS and BiRefNet "
    "convention); wFm: weighted F (beta = 1); Sm: S-measure (alpha = 0.5); meanEm: mean of the mean E-measure "
    "curve; HCE: human correction effort (relax 5, epsilon 2); maxBIoU/meanBIoU: maximum/mean of the mean "
    "Boundary IoU curve over 256 thresholds (dilation 0.02 of the diagonal; BiRefNet's evaluation). "
    "Lower is better for MAE and HCE."
)
_SCORES_VERSION = 1  # bump when a metric's definition changes: cached scores are then recomputed


@dataclass(frozen=True)
class Method:
    """One method's predictions: ``pred`` is a folder, with ``{split}`` where the split's name goes."""

    name: str
    pred: str


@dataclass(frozen=True)
class Job:
    """One (method, split) to score."""

    method: str
    split: str
    pred: Path
    gt: Path


@dataclass
class SplitScores:
    """One method's scores on one split: the summary (:data:`pdfnet.evaluation.folders.METRIC_KEYS`) and the
    mean curves over thresholds 255 .. 0 that the figures draw."""

    summary: dict
    precision: np.ndarray
    recall: np.ndarray
    fm: np.ndarray


def split_spec(text: str) -> tuple[str | None, str]:
    """``NAME=DIR`` -> (NAME, DIR); ``DIR`` -> (None, DIR). A ``=`` inside a path (``runs/lr=0.1``, or an existing
    folder named so) is part of DIR."""
    name, sep, folder = text.partition("=")
    if not sep or "/" in name or "\\" in name or (Path(text).is_dir() and not Path(folder).is_dir()):
        return None, text
    return name, folder


def parse_method(text: str) -> Method:
    """``NAME=DIR`` or ``DIR`` (then named after its last folder that is not ``{split}``).

    Raises:
        EvaluationError: an empty or unusable name (it names files: no ``/``, ``\\``, leading ``.``).
    """
    name, folder = split_spec(text)
    if name is None:
        parts = [p for p in Path(folder).parts if SPLIT not in p and p not in ("/", ".", "..")]
        name = parts[-1] if parts else ""
    check_name(name, f"--pred {text}")
    if not folder:
        raise EvaluationError(f"--pred {text}: no folder after {name}=")
    return Method(name, folder)


def check_name(name: str, where: str) -> None:
    """Method and split names name files: refuse what cannot be one."""
    if not name or name.startswith(".") or any(c in name for c in '/\\:*?"<>|\n'):
        raise EvaluationError(f"{where}: {name!r} cannot name a method or split (it names files); write NAME=DIR")


def plan_jobs(methods: list[Method], gt: str, splits: list[str] | None) -> list[Job]:
    """Every (method, split) with its folders, checked before any scoring.

    ``gt``: the mask folder, with ``{split}`` where the split's name goes; without ``{split}`` and with
    ``splits``, a data root whose splits are found by their layout (:func:`pdfnet.data.layout.find_split`);
    without ``splits``, one split named after ``gt``.

    Raises:
        EvaluationError, DatasetError: a name given twice, ``{split}`` missing where several splits need it, or
            folders that do not exist (all of them named in one line).
    """
    seen: set[str] = set()
    for method in methods:
        if method.name in seen:
            raise EvaluationError(f"method name {method.name!r} is given twice; name each --pred NAME=DIR apart")
        seen.add(method.name)
    names = list(splits or [])
    if len(set(names)) != len(names):
        raise EvaluationError(f"--splits names a split twice: {' '.join(names)}")
    for name in names:
        check_name(name, "--splits")
    if not names:
        if SPLIT in gt or any(SPLIT in m.pred for m in methods):
            raise EvaluationError("{split} in --pred or --gt needs --splits NAME ... to fill it in")
        names = [_split_name(gt)]
    if len(names) > 1:
        for method in methods:
            if SPLIT not in method.pred:
                raise EvaluationError(
                    f"--pred {method.name}={method.pred} has no {SPLIT}: with several --splits each folder needs "
                    f"{SPLIT} where the split's name goes (e.g. runs/{method.name}/{SPLIT})"
                )
    masks = {name: _mask_folder(gt, name, bool(splits)) for name in names}
    jobs = [Job(m.name, s, Path(m.pred.replace(SPLIT, s)), masks[s]) for m in methods for s in names]
    missing = [f"{j.method}/{j.split} ({j.pred})" for j in jobs if not j.pred.is_dir()]
    missing += [f"masks of {s} ({p})" for s, p in masks.items() if not p.is_dir()]
    if missing:
        raise EvaluationError(f"no folder for {len(missing)} of the inputs: " + ", ".join(missing))
    return jobs


def _split_name(gt: str) -> str:
    """A single split's name from its mask folder: the folder, or its parent's where the folder is called
    ``gt``, ``masks``, ..."""
    path = Path(gt).resolve()
    generic = {"gt", "gts", "mask", "masks", "ground_truth", "groundtruth", "labels", "annotations"}
    return path.parent.name if path.name.lower() in generic and path.parent.name else path.name


def _mask_folder(gt: str, split: str, named: bool) -> Path:
    if SPLIT in gt:
        return Path(gt.replace(SPLIT, split))
    if named:  # a data root: the split's masks where the layout puts them
        from ..data.layout import find_split

        return find_split(gt, split).masks
    return Path(gt)


# ------------------------------------------------------------------------------------------------- scoring


def _fingerprint(job: Job, allow_missing: bool) -> str:
    """What the scores depend on: both folders' listings (names, sizes, modification times) and the options."""
    listing = [_SCORES_VERSION, allow_missing]
    for folder in (job.pred, job.gt):
        listing.append(str(folder.resolve()))
        for path in sorted(folder.iterdir()):
            if is_listed(path):
                stat = path.stat()
                listing.append([path.name, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


def _cached(path: Path, fingerprint: str) -> SplitScores | None:
    try:
        data = json.loads(path.read_text())
        if data["fingerprint"] != fingerprint:
            return None
        curves = {k: np.asarray(data["curves"][k], np.float64) for k in ("precision", "recall", "fm")}
        return SplitScores(data["summary"], **curves)
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: scored anew
        return None


def score_jobs(
    jobs: list[Job],
    out: Path,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = "default",
    allow_missing: bool = False,
    rescore: bool = False,
    progress: bool = True,
) -> tuple[dict[str, dict[str, SplitScores]], list[str]]:
    """Score every job (reusing ``out/scores/<method>/<split>.json`` where its inputs are unchanged, unless
    ``rescore``); one that fails is reported and the others still scored.

    Returns:
        (scores by method, then split, in the jobs' order; one error message per failed job).
    """
    from .folders import evaluate_predictions

    results: dict[str, dict[str, SplitScores]] = {}
    errors: list[str] = []
    for job in jobs:
        path = out / "scores" / job.method / f"{job.split}.json"
        fingerprint = _fingerprint(job, allow_missing)
        scores = None if rescore else _cached(path, fingerprint)
        if scores is None:
            try:
                summary, per_image = evaluate_predictions(
                    job.pred, job.gt, workers, cache_dir, allow_missing, progress, desc=f"{job.method} {job.split}"
                )
            except PDFNetError as e:
                errors.append(f"{job.method} on {job.split}: {e}")
                continue
            scores = SplitScores(
                summary,
                np.mean([s.precision for s in per_image], axis=0),
                np.mean([s.recall for s in per_image], axis=0),
                np.mean([s.fm_curve for s in per_image], axis=0),
            )
            curves = {"precision": scores.precision.tolist(), "recall": scores.recall.tolist()}
            curves["fm"] = scores.fm.tolist()
            data = {"fingerprint": fingerprint, "pred": str(job.pred), "gt": str(job.gt), "summary": summary}
            write_text_atomic(path, json.dumps(data | {"curves": curves}) + "\n")
        results.setdefault(job.method, {})[job.split] = scores
    return results, errors


def te_mean(by_split: dict[str, dict]) -> dict | None:
    """The mean of DIS-TE1..4's summaries (``n`` their sum), as DIS papers report "DIS-TE"; None unless all
    four are there."""
    te = [by_split[s] for s in TE_SPLITS if s in by_split]
    if len(te) < len(TE_SPLITS):
        return None
    mean = {k: float(np.mean([r[k] for r in te])) for k in te[0] if k != "n"}
    mean["n"] = int(sum(r["n"] for r in te))
    return mean


def summaries(results: dict[str, dict[str, SplitScores]]) -> dict[str, dict[str, dict]]:
    """Method -> split -> summary, with ``TE-mean`` for methods scored on all of DIS-TE1..4."""
    table = {}
    for method, by_split in results.items():
        table[method] = {split: scores.summary for split, scores in by_split.items()}
        mean = te_mean(table[method])
        if mean is not None:
            table[method][TE_MEAN] = mean
    return table


# ------------------------------------------------------------------------------------------------- writing


def _splits(table: dict[str, dict[str, dict]]) -> list[str]:
    return list(dict.fromkeys(split for by_split in table.values() for split in by_split))


def _format(key: str, value: float) -> str:
    return f"{value:.0f}" if key == "HCE" else f"{value:.3f}"


def _best(rows: dict[str, dict], key: str) -> str | None:
    """The best value of a column as printed (ties at that precision are all best)."""
    if not rows:
        return None
    pick = min if key in LOWER_IS_BETTER else max
    return _format(key, pick(r[key] for r in rows.values()))


def markdown(table: dict[str, dict[str, dict]], errors: list[str] = ()) -> str:
    """One table per split: a row per method, :data:`TABLE_METRICS` and n, the best per column in bold."""
    lines = ["Methods scored by `pdfnet evaluate`. " + CONVENTIONS]
    for split in _splits(table):
        rows = {m: by_split[split] for m, by_split in table.items() if split in by_split}
        lines += ["", f"### {split}", "", "| method | " + " | ".join(TABLE_METRICS) + " | n |"]
        lines.append("|---|" + "---:|" * (len(TABLE_METRICS) + 1))
        best = {k: _best(rows, k) for k in TABLE_METRICS}
        for method, r in rows.items():
            cells = [_format(k, r[k]) for k in TABLE_METRICS]
            cells = [f"**{c}**" if c == best[k] else c for k, c in zip(TABLE_METRICS, cells)]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['n']} |")
    if errors:
        lines += ["", "Not scored (see the run's messages):", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def csv_text(table: dict[str, dict[str, dict]]) -> str:
    """One row per (method, split): every metric of :data:`CSV_METRICS` at full precision, and n."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("method", "split", *CSV_METRICS, "n"))
    for method, by_split in table.items():
        for split, r in by_split.items():
            writer.writerow((method, split, *(f"{r[k]:.6f}" for k in CSV_METRICS), r["n"]))
    return buffer.getvalue()


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SPECIAL["\\"] = r"\textbackslash{}"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def latex(table: dict[str, dict[str, dict]]) -> str:
    """A booktabs tabular: a block per split (its name, then a row per method), the best per column in
    ``\\textbf``; numbers printed as the DIS papers print them (``.924``; HCE whole)."""
    columns = len(TABLE_METRICS) + 1
    lines = [
        "% written by pdfnet evaluate; needs \\usepackage{booktabs}",
        "% " + CONVENTIONS,
        "\\begin{tabular}{l" + "c" * len(TABLE_METRICS) + "}",
        "\\toprule",
        "Method & " + " & ".join(LATEX_HEADS[k] for k in TABLE_METRICS) + " \\\\",
    ]
    for split in _splits(table):
        rows = {m: by_split[split] for m, by_split in table.items() if split in by_split}
        best = {k: _best(rows, k) for k in TABLE_METRICS}
        lines += ["\\midrule", f"\\multicolumn{{{columns}}}{{l}}{{\\textit{{{latex_escape(split)}}}}} \\\\"]
        for method, r in rows.items():
            cells = []
            for k in TABLE_METRICS:
                text = _format(k, r[k])
                number = text[1:] if text.startswith("0.") else text
                cells.append(f"\\textbf{{{number}}}" if text == best[k] else number)
            lines.append(f"{latex_escape(method)} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def plot_split(results: dict[str, dict[str, SplitScores]], split: str, path: Path) -> None:
    """Every method's mean precision-recall curve and F-versus-threshold curve on ``split``, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.arange(255, -1, -1)
    fig, (ax_pr, ax_f) = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = ("-", "--", "-.", ":")
    for i, (method, by_split) in enumerate((m, s) for m, s in results.items() if split in s):
        scores = by_split[split]
        style = dict(color=f"C{i % 10}", linestyle=styles[(i // 10) % len(styles)], linewidth=1.6)
        ax_pr.plot(scores.recall, scores.precision, label=f"{method} (maxFm {scores.summary['maxFm']:.3f})", **style)
        ax_f.plot(thresholds, scores.fm, label=method, **style)
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="precision-recall")
    ax_f.set(xlabel="threshold", ylabel="F-measure (beta^2 = 0.3)", xlim=(0, 255), ylim=(0, 1.01))
    ax_f.set_title("F-measure by threshold")
    for ax in (ax_pr, ax_f):
        ax.grid(alpha=0.3)
    ax_pr.legend(loc="lower left", fontsize="small")
    fig.suptitle(split)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_table(
    results: dict[str, dict[str, SplitScores]], out: Path, errors: list[str] = (), plot: bool = True
) -> dict[str, dict[str, dict]]:
    """``results.md``, ``results.csv``, ``results.tex``, ``metrics.json`` and a ``pr_<split>.png`` per scored
    split into ``out``; returns the summaries by method and split (with ``TE-mean``)."""
    table = summaries(results)
    write_text_atomic(out / "results.md", markdown(table, errors))
    write_text_atomic(out / "results.csv", csv_text(table))
    write_text_atomic(out / "results.tex", latex(table))
    write_text_atomic(out / "metrics.json", json.dumps(table, indent=2) + "\n")
    if plot:
        for split in dict.fromkeys(split for by_split in results.values() for split in by_split):
            plot_split(results, split, out / f"pr_{split}.png")
    return table


def evaluate_table(
    methods: list[Method],
    gt: str,
    out: str | os.PathLike,
    splits: list[str] | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = "default",
    allow_missing: bool = False,
    rescore: bool = False,
    plot: bool = True,
    progress: bool = True,
) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """Score several methods over several splits and write the table's files into ``out`` (see the module's
    docstring); what could be scored is written even when some (method, split) failed.

    Returns:
        (summaries by method and split, with ``TE-mean``; one message per (method, split) not scored).

    Raises:
        EvaluationError, DatasetError, OutputError: bad names or folders, or ``out`` unwritable or in use, before
            any scoring.
    """
    jobs = plan_jobs(methods, gt, splits)
    out = check_writable_folder(out)
    with FolderLock(out, "evaluate"):
        results, errors = score_jobs(jobs, out, workers, cache_dir, allow_missing, rescore, progress)
        table = write_table(results, out, errors, plot)
    return table, errors
