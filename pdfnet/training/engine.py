"""Training PDFNet: the authors' recipe in a loop that reads top to bottom.

Single process or ``torchrun`` (DistributedDataParallel; logging, checkpoints and TensorBoard on rank 0,
validation metrics reduced over ranks). Everything random derives from (seed, epoch[, rank, step]), so that one epoch
plus ``--resume`` to two gives the same weights as two epochs straight.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..config import HARMLESS_ON_RESUME, Config, config_changes, config_from_dict, load_config
from ..data.dataset import EpochSampler, SegmentationDataset, collate, derive_seed
from ..data.layout import SplitNotFoundError, find_split
from ..data.processing import denormalize_image
from ..distributed import (
    OtherProcessError,
    Runtime,
    all_gather,
    any_process,
    everywhere,
    gather_dict,
    held_by_main,
    log,
    on_main,
    setup_runtime,
    teardown,
)
from ..errors import ConfigError, PDFNetError
from ..io import FolderLock
from ..model.backbone import load_swin_weights
from ..model.checkpoint import init_from_checkpoint
from ..model.network import PDFNet, build_pdfnet
from ..runtime import autocast
from . import checkpointing as ckpt
from .losses import pdfnet_loss
from .mining import hardest_half, sample_losses
from .schedule import build_optimizer, lr_for_epoch, set_lr
from .validation import ValidationMeter


class NonFiniteLossError(PDFNetError, RuntimeError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays as it was."""


# ----------------------------------------------------------------------------------------------------- setup


def build_training_model(cfg: Config, rt: Runtime) -> PDFNet:
    """The network, initialised from ``train.init_from`` (a PDFNet checkpoint) or ImageNet Swin weights."""
    torch.manual_seed(cfg.train.seed)
    model = build_pdfnet(cfg.model)
    if cfg.train.init_from:
        loaded, skipped = init_from_checkpoint(model, cfg.train.init_from)
        log(rt, f"initialised {len(loaded)} tensors from {cfg.train.init_from}; {len(skipped)} kept fresh")
    elif cfg.train.pretrained_backbone:
        loaded, skipped = load_swin_weights(model.encoder, cfg.train.pretrained_backbone)
        log(rt, f"Swin encoder: {len(loaded)} tensors from {cfg.train.pretrained_backbone}; fresh: {skipped}")
    return model


def build_loader(cfg: Config, rt: Runtime, splits: Sequence[str], train: bool) -> DataLoader:
    d = cfg.data
    dataset = SegmentationDataset(
        d.root,
        splits,
        d.input_size,
        d.train_depths if train else (d.eval_depth,),
        target_depth=d.target_depth if train else None,
        augment=train and d.augment,
        seed=cfg.train.seed,
    )
    if len(splits) > 1:
        log(rt, "data: " + " + ".join(f"{name} ({n})" for name, n in dataset.split_sizes().items()))
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


def run_config(config_path: str | None, overrides: list[str], resume: str | None) -> tuple[Config, Path | None]:
    """The config of a run and the checkpoint it resumes from (None for a fresh run).

    Resuming without ``--config`` starts from the stored config (overrides apply on top of it). Whatever was
    asked is compared with the stored config: settings that do not change the weights (``HARMLESS_ON_RESUME``)
    may differ and are logged; any other difference is a ConfigError naming each key.
    """
    requested = load_config(config_path, overrides)
    path = ckpt.resolve_resume(resume, Path(requested.output_dir))
    if path is None:
        return requested, None
    stored = config_from_dict(ckpt.read_training_checkpoint(path)["config"])
    if config_path is None:
        requested = load_config(None, overrides, base=stored)
    changes = config_changes(stored, requested)
    refused = [c for c in changes if c[0] not in HARMLESS_ON_RESUME]
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in refused)
        raise ConfigError(
            f"resuming {path} with settings that change its results: {listed}. Resume with the run's own "
            f"settings (omit --config to use the stored ones), or start a fresh output_dir"
        )
    for key, old, new in changes:
        print(f"resume: {key} {old!r} -> {new!r}")
    return requested, path


# ------------------------------------------------------------------------------------------------------ loop


@dataclass
class EpochProgress:
    """How far this process is into an epoch: steps done, its loss sums and per-sample main-output losses so far
    (what a checkpoint written within an epoch holds)."""

    step: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    sample_losses: dict[int, float] = field(default_factory=dict)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer,
    scaler,
    cfg: Config,
    rt: Runtime,
    epoch: int,
    writer,
    progress: EpochProgress | None = None,
    on_checkpoint: Callable[[EpochProgress], None] | None = None,
) -> tuple[dict[str, float], dict[int, float]]:
    """One pass, or what remains of it after ``progress`` (the loader then yields the remaining batches only);
    returns mean losses and, for hard-sample mining, each sample's main-output loss. Every
    ``train.checkpoint_every`` steps (not at the last) ``on_checkpoint`` gets the progress so far."""
    model.train()
    progress = progress or EpochProgress()
    totals, losses_by_sample = dict(progress.totals), dict(progress.sample_losses)
    accum, every, first = cfg.train.accumulation, cfg.train.checkpoint_every, progress.step
    steps = first + len(loader)
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        initial=first,
        total=steps,
        disable=not rt.is_main,
        dynamic_ncols=True,
    )
    for step, batch in enumerate(bar, start=first):
        # dropout and drop path: drawn from (seed, epoch, rank, step), so a run resumed at any step draws the same
        torch.manual_seed(derive_seed(cfg.train.seed, epoch, rt.rank, step))
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
            losses_by_sample.update(sample_losses(output, mask, batch["index"], cfg.model.variant))
        bar.set_postfix(loss=f"{totals['total'] / (step + 1):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if writer is not None and step % 50 == 0:
            writer.add_scalar("train/step_loss", losses["total"].item(), epoch * steps + step)
        # checkpoint_every is a multiple of accum: the gradients were just applied and zeroed
        if on_checkpoint is not None and every and (step + 1) % every == 0 and step + 1 < steps:
            on_checkpoint(EpochProgress(step + 1, dict(totals), dict(losses_by_sample)))
    return {k: v / max(steps, 1) for k, v in totals.items()}, losses_by_sample


def check_finite(loss: torch.Tensor, rt: Runtime, epoch: int, step: int, names: list[str], output_dir: str) -> None:
    """Stop every process together when any one's loss is not finite, naming the samples of every process whose
    loss it was (rank 0 reports)."""
    bad = not bool(torch.isfinite(loss))
    if any_process(bad, rt, loss.device):
        culprits = [n for part in all_gather(names if bad else [], rt) for n in part]
        message = (
            f"the loss is not finite at epoch {epoch + 1}, step {step + 1} (samples {', '.join(culprits)}); "
            f"stopping. The last good checkpoint is {Path(output_dir) / 'last.pt'}"
        )
        raise NonFiniteLossError(message) if rt.is_main else OtherProcessError(message)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, cfg: Config, rt: Runtime) -> tuple[dict, dict]:
    """max F-measure and MAE over the validation split, as the original computes them (in fp32, at the input
    size), and a few samples to look at."""
    model.eval()
    meter = ValidationMeter(rt.device)
    shown: dict[str, list[torch.Tensor]] = {"image": [], "mask": [], "prediction": []}
    for batch in tqdm(loader, desc="validate", disable=not rt.is_main, leave=False, dynamic_ncols=True):
        image, depth = batch["image"].to(rt.device), batch["depth"].to(rt.device)
        with autocast(rt.device, "fp32"):
            prob = model(image, depth).logits[0].float().sigmoid()
        meter.update(prob, batch["mask"].to(rt.device))
        if len(shown["image"]) < cfg.train.log_images:
            shown["image"].append(denormalize_image(batch["image"][:1]))
            shown["mask"].append(batch["mask"][:1])
            shown["prediction"].append(prob[:1].cpu())
    meter.all_reduce()
    return meter.result(), shown


# ------------------------------------------------------------------------------------------------------ main


def train(cfg: Config, resume: str | Path | None = None) -> list[dict]:
    """Train as ``cfg`` says, from scratch or from the checkpoint ``resume`` (a path, or ``auto``: the
    output folder's ``last.pt`` when there is one); returns the per-epoch records also in ``metrics.jsonl``.

    Raises:
        OutputError: the output folder holds another run (without ``resume``) or is in use by one.
        CheckpointError, DatasetError, NonFiniteLossError: naming the file or sample at fault.
    """
    rt = setup_runtime(cfg.train.device)
    try:
        out = Path(cfg.output_dir)
        path = everywhere(lambda: ckpt.resolve_resume(str(resume) if resume is not None else None, out), rt)
        with held_by_main(FolderLock(out, "training"), rt):
            return _train(cfg, rt, path, fresh_ok=resume == "auto")
    finally:
        teardown(rt)


def _train(cfg: Config, rt: Runtime, resume_path: Path | None, fresh_ok: bool) -> list[dict]:
    out = Path(cfg.output_dir)

    # every mistake that can be found before training is found here, by every process together (everywhere,
    # on_main), so that all stop at once and rank 0 reports it once
    def read_checkpoint() -> tuple[dict | None, EpochProgress]:
        checkpoint = ckpt.read_training_checkpoint(resume_path) if resume_path else None
        if checkpoint is None:
            return None, EpochProgress()
        if checkpoint["epoch"] >= cfg.train.epochs:
            raise ConfigError(
                f"{resume_path} has finished {checkpoint['epoch']} epoch(s) and train.epochs is {cfg.train.epochs}: "
                "nothing to do; set train.epochs higher to train on"
            )
        return checkpoint, _progress_within_epoch(checkpoint, resume_path, rt)

    def check_folder() -> None:
        if checkpoint is None and not fresh_ok:
            ckpt.check_fresh(out)

    checkpoint, progress = everywhere(read_checkpoint, rt)
    on_main(check_folder, rt)
    model = everywhere(lambda: build_training_model(cfg, rt).to(rt.device), rt)
    train_loader = everywhere(lambda: build_loader(cfg, rt, cfg.data.train_sets, train=True), rt)
    val_loader = everywhere(lambda: _validation_loader(cfg, rt), rt)
    # written once the run's mistakes are found: a run that cannot start leaves no folder (its lock removes it)
    on_main(lambda: ckpt.write_config(cfg, out), rt)

    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.train.precision == "fp16")
    start, best, losses_by_sample = 0, -math.inf, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start = checkpoint["epoch"]
        best = ckpt.best_so_far(out, start, checkpoint["best_metric"])
        losses_by_sample = {int(k): v for k, v in checkpoint["sample_losses"].items()}
        within = f", step {progress.step} of epoch {start + 1}" if progress.step else ""
        log(rt, f"resuming from {resume_path} after epoch {start}{within}")
    net: nn.Module = DistributedDataParallel(model) if rt.distributed else model
    if cfg.train.compile:
        net = torch.compile(net)

    writer = SummaryWriter(str(out / "tensorboard")) if rt.is_main else None
    history = ckpt.records_up_to(out / "metrics.jsonl", start) if rt.is_main else []  # epochs before start
    records = []
    for epoch in range(start, cfg.train.epochs):
        began = time.time()
        set_lr(optimizer, lr_for_epoch(epoch, cfg))
        mining = cfg.train.hard_mining and epoch % 2 == 1 and losses_by_sample
        subset = hardest_half(losses_by_sample) if mining else None
        train_loader.sampler.set_epoch(epoch, subset, start=progress.step * cfg.train.batch_size)
        save = partial(_save_within_epoch, model, optimizer, scaler, cfg, rt, epoch, best, losses_by_sample)
        train_stats, epoch_losses = train_one_epoch(
            net, train_loader, optimizer, scaler, cfg, rt, epoch, writer, progress, save
        )
        progress = EpochProgress()
        losses_by_sample = gather_dict(epoch_losses, rt) if cfg.train.hard_mining else {}
        val_stats, shown = validate(net, val_loader, cfg, rt) if val_loader is not None else ({}, {})
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train": train_stats,
            "val": val_stats,
            "samples": train_loader.sampler.shard_size() * rt.world_size,
            "time_s": round(time.time() - began, 3),
        }

        # rank 0 writes; the others wait, and stop with it if it cannot
        args = (model, optimizer, scaler, cfg, rt, epoch, record, shown, writer, history, best, losses_by_sample)
        best = on_main(partial(_write_epoch, *args), rt)
        records.append(record)
    if writer is not None:
        writer.close()
    return records


def _write_epoch(
    model,
    optimizer,
    scaler,
    cfg: Config,
    rt: Runtime,
    epoch: int,
    record: dict,
    shown: dict,
    writer,
    history: list,
    best: float,
    losses_by_sample: dict,
) -> float:
    """Rank 0's end of epoch ``epoch`` (0-based): metrics line, ``best.pt`` when improved, ``last.pt``; returns the
    best score so far."""
    out = Path(cfg.output_dir)
    # model selection: validation max F when there is validation (ties count, as the original's >=), else the
    # training loss
    score = record["val"]["maxFm"] if record["val"] else -record["train"]["total"]
    improved, best = score >= best, max(best, score)
    state = ckpt.checkpoint_state(model, optimizer, scaler, cfg, epoch + 1, best, losses_by_sample, record)
    history.append(record)
    # the order that keeps the three consistent through a kill (see checkpointing)
    ckpt.write_metrics(out / "metrics.jsonl", history)
    if improved:
        ckpt.save_checkpoint(state, out / "best.pt")
    ckpt.save_checkpoint(state, out / "last.pt")
    _log_epoch(writer, record, shown)
    log(rt, f"epoch {epoch + 1}: " + json.dumps({k: record[k] for k in ("train", "val", "time_s")}))
    return best


def _save_within_epoch(
    model, optimizer, scaler, cfg: Config, rt: Runtime, epoch: int, best: float, previous_losses: dict, p: EpochProgress
) -> None:
    """``last.pt`` within epoch ``epoch`` (0-based) after ``p.step`` steps: the epochs done, every process's
    progress in this one, and the previous epoch's sample losses this epoch's hard-sample choice came from. Every
    process calls it (it gathers); rank 0 writes."""
    totals, losses = all_gather(p.totals, rt), gather_dict(p.sample_losses, rt)

    def write() -> None:
        state = ckpt.checkpoint_state(model, optimizer, scaler, cfg, epoch, best, previous_losses, None)
        state.update(step=p.step, epoch_totals=totals, epoch_sample_losses=losses, world_size=rt.world_size)
        ckpt.save_checkpoint(state, Path(cfg.output_dir) / "last.pt")

    on_main(write, rt)


def _progress_within_epoch(checkpoint: dict, path: Path | None, rt: Runtime) -> EpochProgress:
    """Where a checkpoint written within an epoch left this process (nothing done for an epoch's end)."""
    step = checkpoint.get("step", 0)
    if not step:
        return EpochProgress()
    if checkpoint["world_size"] != rt.world_size:
        raise ConfigError(
            f"{path} was written within an epoch by {checkpoint['world_size']} process(es); resume it with as many "
            f"(this run has {rt.world_size}): each process continues its own share of the epoch"
        )
    losses = {int(k): v for k, v in checkpoint["epoch_sample_losses"].items()}
    return EpochProgress(step, dict(checkpoint["epoch_totals"][rt.rank]), losses)


def _validation_loader(cfg: Config, rt: Runtime) -> DataLoader | None:
    if not cfg.train.validate:
        return None
    try:
        find_split(cfg.data.root, cfg.data.val_split)
    except SplitNotFoundError as e:
        log(rt, f"warning: {e}; without validation, best.pt follows the training loss")
        return None
    return build_loader(cfg, rt, (cfg.data.val_split,), train=False)


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
