"""The optimiser and its learning-rate schedule, as the original builds them (timm's cosine schedule)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import Config


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and other 1-D parameters (norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)


def lr_at(t: int, cfg: Config) -> float:
    """timm's ``CosineLRScheduler`` value at epoch ``t`` (as ``create_scheduler`` configures it from the
    original's arguments): linear warm-up from warmup_lr over warmup_epochs, then cosine from lr to min_lr over
    the run's epochs (no warm-up prefix, one cycle)."""
    o, total = cfg.optim, cfg.train.epochs
    if t < o.warmup_epochs:
        return o.warmup_lr + t * ((o.lr - o.warmup_lr) / o.warmup_epochs)
    if t >= total:
        return o.min_lr
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * t / total))


def lr_for_epoch(epoch: int, cfg: Config) -> float:
    """The rate epoch ``epoch`` (0-based) trains with, with the original's timing: the original calls
    ``scheduler.step(epoch)`` after each epoch, so epoch e >= 1 trains with the schedule's value at e - 1,
    and epoch 0 with the rate timm's scheduler starts from (warmup_lr with a warm-up, else lr)."""
    if epoch == 0:
        return cfg.optim.warmup_lr if cfg.optim.warmup_epochs else cfg.optim.lr
    return lr_at(epoch - 1, cfg)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
