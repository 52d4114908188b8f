"""Where a training process runs and its place among the others under ``torchrun``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..runtime import resolve_device


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
    if world_size > 1:
        cuda = torch.cuda.is_available() and device != "cpu"
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local_rank)
        return Runtime(torch.device(f"cuda:{local_rank}" if cuda else "cpu"), rank, world_size)
    return Runtime(resolve_device(device))


def log(rt: Runtime, message: str) -> None:
    """A line on the main process's stderr, above any progress bar."""
    if rt.is_main:
        tqdm.write(message, file=sys.stderr)


def gather_dict(values: dict, rt: Runtime) -> dict:
    """The union of every process's dict (a no-op in one process)."""
    if not rt.distributed:
        return values
    parts: list[dict] = [{} for _ in range(rt.world_size)]
    dist.all_gather_object(parts, values)
    return {k: v for part in parts for k, v in part.items()}


def any_process(flag: bool, rt: Runtime, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so that all stop together)."""
    t = torch.tensor(1.0 if flag else 0.0, device=device)
    if rt.distributed:
        dist.all_reduce(t)
    return bool(t > 0)
