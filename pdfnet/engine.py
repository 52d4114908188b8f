"""Training PDFNet: the authors' recipe in a loop that reads top to bottom.

Single process or ``torchrun`` (DistributedDataParallel; logging, checkpoints and TensorBoard on rank 0,
validation metrics reduced over ranks). Everything random derives from (seed, epoch[, rank]), so that one epoch
plus ``--resume`` to two gives the same weights as two epochs straight.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .backbone import load_swin_weights
from .checkpoint import is_official_layout, official_key, unwrap_state_dict
from .config import Config, config_from_dict, save_config, to_dict
from .data import DIS5KDataset, EpochSampler, collate, derive_seed
from .depth import PRECISIONS
from .io import atomic_path
from .losses import pdfnet_loss, ssim_loss, structure_loss
from .model import PDFNet, build_pdfnet
from .predictor import IMAGENET_MEAN, IMAGENET_STD
from .validation import ValidationMeter


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays as it was."""


@dataclass
class Runtime:
    """Where this process runs and its place among the others."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str | None) -> Runtime:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if world_size > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local_rank)
        return Runtime(torch.device(f"cuda:{local_rank}" if cuda else "cpu"), rank, world_size)
    return Runtime(torch.device(device or ("cuda" if cuda else "cpu")))


def log(rt: Runtime, message: str) -> None:
    if rt.is_main:
        tqdm.write(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------- model


def build_training_model(cfg: Config, rt: Runtime) -> PDFNet:
    """The network, initialised from ``model.init_from`` (a PDFNet checkpoint) or ImageNet Swin weights."""
    torch.manual_seed(cfg.train.seed)
    model = build_pdfnet(cfg.model)
    if cfg.model.init_from:
        loaded, skipped = load_matching(model, cfg.model.init_from)
        log(rt, f"initialised {len(loaded)} tensors from {cfg.model.init_from}; {len(skipped)} kept fresh")
    elif cfg.model.pretrained_backbone:
        loaded, skipped = load_swin_weights(model.encoder, cfg.model.pretrained_backbone)
        log(rt, f"Swin encoder: {len(loaded)} tensors from {cfg.model.pretrained_backbone}; fresh: {skipped}")
    return model


def load_matching(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Copy every tensor of a PDFNet checkpoint (ours or the authors') whose name and shape match, as the
    original's fine-tuning does: e.g. the published ``release`` weights into a ``cvpr`` model keep everything
    but the depth head's first convolutions."""
    state = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    own = model.state_dict()
    if is_official_layout(state):
        state = {k: state[official_key(k)] for k in own if official_key(k) in state}
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise ValueError(f"no tensor of {path} matches the model")
    model.load_state_dict(matched, strict=False)
    return sorted(matched), sorted(set(own) - set(matched))


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and other 1-D parameters (norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)


def lr_at(epoch: int, cfg: Config) -> float:
    """timm's cosine schedule per epoch: linear warm-up from warmup_lr, then cosine from lr down to min_lr."""
    o, total = cfg.optim, cfg.train.epochs
    if epoch < o.warmup_epochs:
        return o.warmup_lr + (o.lr - o.warmup_lr) * epoch / o.warmup_epochs
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * epoch / max(total, 1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ------------------------------------------------------------------------------------------------------ data


def build_loader(cfg: Config, rt: Runtime, split: str, train: bool) -> DataLoader:
    d = cfg.data
    dataset = DIS5KDataset(
        d.root,
        split,
        d.input_size,
        d.train_depths if train else (d.eval_depth,),
        target_depth=d.target_depth if train else None,
        augment=train and d.augment,
        seed=cfg.train.seed,
    )
    sampler = EpochSampler(
        len(dataset), cfg.train.seed, shuffle=train, rank=rt.rank, world_size=rt.world_size, pad=train
    )
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=d.num_workers,
        collate_fn=collate,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=d.num_workers > 0,
        # its own generator: starting workers then draws nothing from the global RNG (which drives dropout),
        # whether the workers start in this epoch or persist from an earlier one
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


# ------------------------------------------------------------------------------------------------------ loop


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: Config,
    rt: Runtime,
    epoch: int,
    writer,
) -> tuple[dict[str, float], dict[int, float]]:
    """One pass; returns mean losses and, for hard-sample mining, each sample's main-output loss."""
    model.train()
    totals: dict[str, float] = {}
    sample_losses: dict[int, float] = {}
    accum = cfg.train.accumulation
    steps = len(loader)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not rt.is_main, dynamic_ncols=True)
    for step, batch in enumerate(bar):
        image, depth = batch["image"].to(rt.device), batch["depth"].to(rt.device)
        mask, target = batch["mask"].to(rt.device), batch["depth_target"].to(rt.device)
        update = (step + 1) % accum == 0 or step + 1 == steps
        sync = nullcontext() if update or not rt.distributed else model.no_sync()
        with sync:
            with autocast(rt.device, cfg.train.precision):
                output = model(image, depth)
            losses = pdfnet_loss(output, mask, target, variant=cfg.model.variant)  # float32 outside autocast
            check_finite(losses["total"], rt, epoch, step, batch["name"], cfg.output_dir)
            scaler.scale(losses["total"] / accum).backward()
        if update:
            if cfg.optim.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v.item()
        if cfg.train.hard_mining:
            sample_losses.update(main_output_losses(output, mask, batch["index"]))
        bar.set_postfix(loss=f"{totals['total'] / (step + 1):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if writer is not None and step % 50 == 0:
            writer.add_scalar("train/step_loss", losses["total"].item(), epoch * steps + step)
    return {k: v / max(steps, 1) for k, v in totals.items()}, sample_losses


def check_finite(loss: torch.Tensor, rt: Runtime, epoch: int, step: int, names: list[str], output_dir: str) -> None:
    """Stop every process together when any one's loss is not finite."""
    bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=loss.device)
    if rt.distributed:
        dist.all_reduce(bad)
    if bad > 0:
        raise NonFiniteLossError(
            f"the loss is not finite at epoch {epoch + 1}, step {step + 1} (samples {', '.join(names)} on rank "
            f"{rt.rank}); stopping. The last good checkpoint is {Path(output_dir) / 'last.pt'}"
        )


@torch.no_grad()
def main_output_losses(output, mask: torch.Tensor, indices: torch.Tensor) -> dict[int, float]:
    """Each sample's loss of the full-resolution output (structure + SSIM / 2), the original's ranking."""
    logits = output.logits[0].float()
    return {
        int(i): float(
            structure_loss(logits[b : b + 1], mask[b : b + 1])
            + 0.5 * ssim_loss(logits[b : b + 1].sigmoid(), mask[b : b + 1])
        )
        for b, i in enumerate(indices)
    }


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, cfg: Config, rt: Runtime) -> tuple[dict, dict]:
    """max F-measure and MAE over the validation split (at the input size), and a few samples to look at."""
    model.eval()
    meter = ValidationMeter(rt.device)
    shown: dict[str, list[torch.Tensor]] = {"image": [], "mask": [], "prediction": []}
    for batch in tqdm(loader, desc="validate", disable=not rt.is_main, leave=False, dynamic_ncols=True):
        image, depth = batch["image"].to(rt.device), batch["depth"].to(rt.device)
        with autocast(rt.device, cfg.train.precision):
            prob = model(image, depth).logits[0].float().sigmoid()
        meter.update(prob, batch["mask"].to(rt.device))
        if len(shown["image"]) < cfg.train.log_images:
            shown["image"].append(denormalize(batch["image"][:1]))
            shown["mask"].append(batch["mask"][:1])
            shown["prediction"].append(prob[:1].cpu())
    meter.all_reduce()
    return meter.result(), shown


def denormalize(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (image * std + mean).clamp(0, 1)


# ----------------------------------------------------------------------------------------------- checkpoints


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "python": random.getstate()[1],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def checkpoint_state(
    model: PDFNet, optimizer, scaler, cfg: Config, epoch: int, best: float, sample_losses, record
) -> dict:
    """Everything a run needs to continue; ``model`` is the plain state dict of the unwrapped network."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]},
        "epoch": epoch,
        "best_metric": best,
        "sample_losses": sample_losses,
        "rng": rng_states(),
        "config": to_dict(cfg),
        "git_revision": git_revision(),
        "metrics": record,
    }


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        last = output_dir / "last.pt"
        return last if last.exists() else None
    if not Path(resume).exists():
        raise FileNotFoundError(f"no checkpoint to resume from at {resume}")
    return Path(resume)


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Drop lines of epochs after the checkpoint (written before a crash), so a resumed run does not repeat
    them."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= epochs_done]
    path.write_text("".join(line + "\n" for line in keep))


# ------------------------------------------------------------------------------------------------------ main


def train(cfg: Config, resume: str | None = None) -> list[dict]:
    """Train as ``cfg`` says; returns the per-epoch records also written to ``metrics.jsonl``."""
    rt = setup_runtime(cfg.train.device)
    try:
        return _train(cfg, rt, resume)
    finally:
        if rt.distributed:
            dist.destroy_process_group()


def _train(cfg: Config, rt: Runtime, resume: str | None) -> list[dict]:
    out = Path(cfg.output_dir)
    resume_path = resolve_resume(resume, out)
    checkpoint = torch.load(resume_path, map_location="cpu", weights_only=True) if resume_path else None
    if checkpoint is not None:
        stored = config_from_dict(checkpoint["config"])
        cfg = _replace_epochs(stored, cfg)  # a resumed run keeps its config; only the epoch count may grow
        log(rt, f"resuming from {resume_path} after epoch {checkpoint['epoch']}")
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    model = build_training_model(cfg, rt).to(rt.device)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.train.precision == "fp16")
    start, best, sample_losses = 0, -math.inf, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start, best = checkpoint["epoch"], checkpoint["best_metric"]
        sample_losses = {int(k): v for k, v in checkpoint["sample_losses"].items()}
    net: nn.Module = DistributedDataParallel(model) if rt.distributed else model
    if cfg.train.compile:
        net = torch.compile(net)

    train_loader = build_loader(cfg, rt, cfg.data.train_split, train=True)
    val_loader = _validation_loader(cfg, rt)
    writer = _tensorboard(out) if rt.is_main else None
    if rt.is_main:
        trim_metrics(out / "metrics.jsonl", start)
    records = []
    for epoch in range(start, cfg.train.epochs):
        began = time.time()
        set_lr(optimizer, lr_at(epoch, cfg))
        subset = hardest_half(sample_losses) if cfg.train.hard_mining and epoch % 2 == 1 and sample_losses else None
        train_loader.sampler.set_epoch(epoch, subset)
        torch.manual_seed(derive_seed(cfg.train.seed, epoch, rt.rank))  # dropout and drop path
        train_stats, epoch_losses = train_one_epoch(net, train_loader, optimizer, scaler, cfg, rt, epoch, writer)
        sample_losses = gather_losses(epoch_losses, rt) if cfg.train.hard_mining else {}
        val_stats, shown = validate(net, val_loader, cfg, rt) if val_loader is not None else ({}, {})
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train": train_stats,
            "val": val_stats,
            "samples": len(train_loader.sampler) * rt.world_size,
            "time_s": round(time.time() - began, 3),
        }
        records.append(record)
        if rt.is_main:
            # model selection: validation max F when there is validation, else the training loss
            score = val_stats["maxFm"] if val_stats else -train_stats["total"]
            improved = score > best
            best = max(best, score)
            state = checkpoint_state(model, optimizer, scaler, cfg, epoch + 1, best, sample_losses, record)
            save_atomic(state, out / "last.pt")
            if improved:
                save_atomic(state, out / "best.pt")
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            _log_epoch(writer, record, shown)
            log(rt, f"epoch {epoch + 1}: " + json.dumps({k: record[k] for k in ("train", "val", "time_s")}))
        if rt.distributed:
            dist.barrier()
    if writer is not None:
        writer.close()
    return records


def _replace_epochs(stored: Config, requested: Config) -> Config:
    return replace(stored, train=replace(stored.train, epochs=requested.train.epochs), output_dir=requested.output_dir)


def _validation_loader(cfg: Config, rt: Runtime) -> DataLoader | None:
    if not cfg.train.validate:
        return None
    if not (Path(cfg.data.root) / cfg.data.val_split).is_dir():
        log(
            rt,
            f"warning: no validation split {cfg.data.val_split} in {cfg.data.root}; best.pt follows the training loss",
        )
        return None
    return build_loader(cfg, rt, cfg.data.val_split, train=False)


def hardest_half(sample_losses: dict[int, float]) -> list[int]:
    ranked = sorted(sample_losses, key=lambda i: sample_losses[i], reverse=True)
    return ranked[: max(len(ranked) // 2, 1)]


def gather_losses(losses: dict[int, float], rt: Runtime) -> dict[int, float]:
    if not rt.distributed:
        return losses
    parts: list[dict] = [{} for _ in range(rt.world_size)]
    dist.all_gather_object(parts, losses)
    return {k: v for part in parts for k, v in part.items()}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log_epoch(writer, record: dict, shown: dict) -> None:
    if writer is None:
        return
    step = record["epoch"]
    for k, v in record["train"].items():
        writer.add_scalar(f"train/{k}", v, step)
    for k in ("maxFm", "MAE"):
        if k in record["val"]:
            writer.add_scalar(f"val/{k}", record["val"][k], step)
    writer.add_scalar("lr", record["lr"], step)
    for name, images in shown.items():
        if images:
            writer.add_images(f"samples/{name}", torch.cat(images), step)
    writer.flush()
