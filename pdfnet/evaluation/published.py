"""The numbers the PDFNet paper published, which ``test.py``'s ``results.md`` shows under a run's own rows.

Both versions of the paper score with the authors' ``metric_tools/soc_metrics.py`` (the same file in the
``release`` and the CVPR commits): its maxF is the maximum of F computed from the mean precision and recall
curves, our ``maxFm_pr`` (not ``maxFm``, the maximum of the mean per-image F curve of the DIS and BiRefNet
papers); its E is the mean of the mean E-measure curve, our ``meanEm``. The published numbers use the authors'
test-time augmentation (``test.py --tta``). HRSOD-TE and UHRSD-TE are scored with the model trained on
HRSOD-TR and UHRSD-TR, not the DIS-5K one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedScores:
    """One version of the paper's table.

    Attributes:
        label: what the table's rows call it.
        source: the paper, version and date.
        scores: split name (as :mod:`pdfnet.data.layout` names it; ``TE-mean`` for DIS-TE1..4's mean) -> our
            metric key -> the published value (three decimals, as printed).
    """

    label: str
    source: str
    scores: dict[str, dict[str, float]]


def _row(max_f: float, weighted_f: float, e: float, s: float, mae: float) -> dict[str, float]:
    # in the paper's column order: maxF, wF, E, S, MAE
    return {"maxFm_pr": max_f, "wFm": weighted_f, "meanEm": e, "Sm": s, "MAE": mae}


ARXIV_V1 = PublishedScores(
    label="arXiv v1",
    source="PDFNet, arXiv 2503.06100v1 (March 2025)",
    scores={
        "DIS-VD": _row(0.924, 0.873, 0.944, 0.916, 0.030),
        "DIS-TE1": _row(0.909, 0.846, 0.927, 0.899, 0.031),
        "DIS-TE2": _row(0.931, 0.885, 0.947, 0.924, 0.028),
        "DIS-TE3": _row(0.941, 0.900, 0.957, 0.928, 0.027),
        "DIS-TE4": _row(0.918, 0.867, 0.941, 0.910, 0.037),
        "TE-mean": _row(0.925, 0.874, 0.943, 0.915, 0.031),
        "HRSOD-TE": _row(0.971, 0.943, 0.977, 0.963, 0.012),
        "UHRSD-TE": _row(0.970, 0.945, 0.966, 0.953, 0.019),
    },
)
CVPR_2026 = PublishedScores(
    label="CVPR 2026",
    source="PDFNet, CVPR 2026 (maxF only: DIS-VD and DIS-TE, the latter the mean of DIS-TE1..4)",
    scores={"DIS-VD": {"maxFm_pr": 0.915}, "TE-mean": {"maxFm_pr": 0.915}},
)
PUBLISHED = (ARXIV_V1, CVPR_2026)
