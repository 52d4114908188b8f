"""``python test.py``: predict the DIS test splits with a checkpoint and score them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_pdfnet
from .data import DIS5KDataset, collate
from .dis5k import mask_dir
from .evaluate import evaluate_predictions, write_results
from .io import write_image_atomic, write_text_atomic
from .predictor import Predictor, to_mask

TABLE_KEYS = ("maxFm", "wFm", "MAE", "Sm", "meanEm", "HCE")
TEST_SPLITS = ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")


@torch.inference_mode()
def predict_split(
    predictor: Predictor,
    data_root: str | os.PathLike,
    split: str,
    out_dir: Path,
    batch_size: int = 1,
    depth_folder: str = "depth_large",
    num_workers: int = 2,
) -> int:
    """Write an 8-bit prediction per image of ``split`` at its mask's size into ``out_dir``; returns the count.

    Inputs are made as the original's test loader makes them (bilinear resizing with aligned corners, the
    ``depth_large`` maps); probabilities go back to each mask's size bilinearly.
    """
    dataset = DIS5KDataset(data_root, split, predictor.input_size, (depth_folder,))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    written = 0
    for batch in tqdm(loader, desc=f"predict {split}", unit="batch"):
        probs = predictor.logits(batch["image"].to(predictor.device), batch["depth"].to(predictor.device)).sigmoid()
        for prob, name, size in zip(probs, batch["name"], batch["size"].tolist()):
            full = F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False)[0, 0]
            write_image_atomic(out_dir / f"{name}.png", to_mask(full.cpu().numpy()))
            written += 1
    return written


def run_test(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike,
    splits: list[str],
    out: str | os.PathLike,
    tta: bool = False,
    batch_size: int = 1,
    precision: str = "fp32",
    variant: str | None = None,
    device: str | None = None,
    input_size: int = 1024,
    workers: int | None = None,
    cache_dir: str | None = "default",
) -> dict[str, dict]:
    """Predict and score every split; writes ``out/preds/<split>/``, ``out/<split>.json`` (with CSV and PNG),
    ``out/metrics.json`` and ``out/results.md``. Returns the metrics by split (and ``TE-mean``)."""
    out = Path(out)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_pdfnet(checkpoint, variant=variant)
    predictor = Predictor(model, None, device=device, precision=precision, input_size=input_size, tta=tta)
    results: dict[str, dict] = {}
    for split in splits:
        pred_dir = out / "preds" / split
        predict_split(predictor, data_root, split, pred_dir, batch_size)
        summary, scores = evaluate_predictions(
            pred_dir, mask_dir(data_root, split), workers, cache_dir, desc=f"score {split}"
        )
        write_results(summary, scores, out / f"{split}.json")
        results[split] = summary
    te = [results[s] for s in TEST_SPLITS if s in results]
    if len(te) == len(TEST_SPLITS):
        results["TE-mean"] = {k: float(np.mean([r[k] for r in te])) for k in te[0] if k != "n"}
        results["TE-mean"]["n"] = int(sum(r["n"] for r in te))
    write_text_atomic(out / "metrics.json", json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, checkpoint=str(checkpoint), tta=tta, variant=model.variant)
    write_text_atomic(out / "results.md", table)
    print(table)
    return results


def markdown_table(results: dict[str, dict], checkpoint: str, tta: bool, variant: str) -> str:
    """Rows: splits (and their TE mean); columns: the metrics DIS papers report."""
    lines = [
        f"PDFNet ({variant}) `{checkpoint}`, test-time augmentation: {'yes' if tta else 'no'}. "
        "maxFm is the maximum of the mean per-image F curve (beta^2 = 0.3); HCE at relax 5, epsilon 2.",
        "",
        "| split | " + " | ".join(TABLE_KEYS) + " | n |",
        "|---|" + "---|" * (len(TABLE_KEYS) + 1),
    ]
    for split, r in results.items():
        cells = [f"{r[k]:.1f}" if k == "HCE" else f"{r[k]:.4f}" for k in TABLE_KEYS]
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {r['n']} |")
    return "\n".join(lines) + "\n"
