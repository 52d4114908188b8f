"""A run's files and their order: ``config.yaml``, ``metrics.jsonl``, ``best.pt`` and ``last.pt``.

Each epoch writes, each file atomically, first the metrics line, then ``best.pt`` (when validation improved),
then ``last.pt``, the commit point. A kill at any moment leaves ``last.pt`` at some epoch k, ``metrics.jsonl``
with every epoch up to k (perhaps k + 1) and ``best.pt`` the best of them (perhaps from k + 1); resuming from
``last.pt`` drops metrics lines after k and keeps a newer ``best.pt`` as the best so far.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from ..config import Config, config_yaml, to_dict
from ..errors import CheckpointError, OutputError
from ..io import atomic_path, write_text_atomic
from ..model.state_dict import read_weights

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")
_REQUIRED = ("model", "optimizer", "scaler", "epoch", "best_metric", "config")


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def checkpoint_state(model, optimizer, scaler, cfg: Config, epoch: int, best: float, sample_losses, record) -> dict:
    """Everything a run needs to continue; ``model`` is the plain state dict of the unwrapped network. Nothing
    random is stored: every random stream derives from the seed and the epoch."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_metric": best,
        "sample_losses": sample_losses,
        "config": to_dict(cfg),
        "git_revision": git_revision(),
        "metrics": record,
    }


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save through a temporary file: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint to resume from, checked.

    Raises:
        CheckpointError: unreadable, or not one of our training checkpoints (naming what it lacks).
    """
    checkpoint = read_weights(path)
    missing = [k for k in _REQUIRED if k not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint of this package (no {', '.join(missing)}); to fine-tune from "
            "its weights, start a fresh run with train.init_from=" + str(path)
        )
    return dict(checkpoint)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` is ``output_dir/last.pt`` when it exists (else a fresh start),
    anything else a path that must exist."""
    if resume is None:
        return None
    if resume == "auto":
        last = output_dir / "last.pt"
        return last if last.exists() else None
    if not Path(resume).is_file():
        raise CheckpointError(f"no checkpoint to resume from at {resume}")
    return Path(resume)


def check_fresh(output_dir: Path) -> None:
    """Refuse to start a new run where one already wrote its files."""
    found = [name for name in RUN_FILES if (output_dir / name).exists()]
    if found:
        raise OutputError(
            f"{output_dir} already holds a run ({', '.join(found)}); continue it with --resume auto, or choose a "
            "fresh output_dir=..."
        )


def write_config(cfg: Config, output_dir: Path) -> None:
    write_text_atomic(output_dir / "config.yaml", config_yaml(cfg))


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:  # a line cut by a crash of an older version
            continue
    return lines


def write_metrics(path: Path, records: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` (atomically) with one line per record."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def records_up_to(path: Path, epochs_done: int) -> list[dict]:
    """The metric lines of epochs 1..epochs_done (a resumed run drops those written after its checkpoint)."""
    return [r for r in read_metrics(path) if isinstance(r, dict) and r.get("epoch", 0) <= epochs_done]


def best_so_far(output_dir: Path, epochs_done: int, best: float) -> float:
    """The best validation score to beat when resuming after ``epochs_done`` epochs: ``last.pt``'s, or that of a
    ``best.pt`` written for a later epoch just before a kill (it stays the best unless beaten)."""
    path = output_dir / "best.pt"
    if not path.exists():
        return best
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable best.pt is replaced by the next improvement
        return best
    if stored.get("epoch", 0) > epochs_done and isinstance(stored.get("best_metric"), float):
        return max(best, stored["best_metric"])
    return best
