"""Many processes, one job: every command under ``torchrun`` (one process per GPU, or several on a CPU).

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), a process joins the group (NCCL on GPUs, gloo
on CPUs) and takes its share: training splits batches (DistributedDataParallel), ``predict``, ``depth`` and
``test`` split their inputs into disjoint shards (``shard``), so that every output is written exactly once, by
one process. Rank 0 holds the output folder's lock, prints the summary and scores. In one process every helper
here is a no-op.

Errors: an error met by one process is agreed on by all (``all_ranks``, ``everywhere``, ``on_main``), so that
every process stops rather than waits for the others at the next collective call; rank 0 reports a user's
mistake (``PDFNetError``) once, and a process that meets a bug prints its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import InputError, PDFNetError
from .runtime import resolve_device

T = TypeVar("T")


class OtherProcessError(PDFNetError, RuntimeError):
    """Another process of a ``torchrun`` job stopped on an error (which it reports); this one stops with it."""


class LaunchError(InputError):
    """A launch that no process of a ``torchrun`` job can run with (a device that does not exist, more processes
    on a node than it has GPUs): every process finds it alike, before the group exists; rank 0 reports it."""


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


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process on its own (readable before the group is joined)."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_runtime(device: str | None, timeout: timedelta = timedelta(minutes=30)) -> Runtime:
    """Join the process group when started by torchrun and pick this process's device: ``cuda:LOCAL_RANK``
    unless ``device`` is ``cpu`` (or there is no GPU); else ``device`` as :func:`pdfnet.runtime.resolve_device`
    chooses it.

    Args:
        timeout: how long a collective call waits for the slowest process.

    Raises:
        LaunchError: ``device`` does not exist here, or this node runs more processes than it has GPUs.
    """
    if not launched_by_torchrun():
        return Runtime(resolve_device(device))
    try:
        asked = resolve_device(device) if device is not None else None
    except InputError as e:
        raise LaunchError(str(e)) from None
    cuda = torch.cuda.is_available() and (asked is None or asked.type == "cuda")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    # every process of the node checks the node's count (not only those without a GPU), so rank 0 reports it
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if cuda and per_node > torch.cuda.device_count():
        raise LaunchError(
            f"{per_node} processes on this node but {torch.cuda.device_count()} GPU(s): one process per GPU "
            f"(--nproc_per_node {torch.cuda.device_count()}), or --device cpu"
        )
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        _bind_nothing_to_the_group()
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        _stop_on_sigterm()
    return Runtime(torch.device(f"cuda:{local_rank}" if cuda else "cpu"), rank, dist.get_world_size())


def _bind_nothing_to_the_group() -> None:
    """Import ``torch.distributed.nn.functional`` while no process group exists.

    Its functions take the world group as a default argument, bound when the module is first imported (transformers
    imports it while it builds a model). Imported after the group exists, they keep the group, and its worker
    threads, alive after ``destroy_process_group``: a worker still releasing the last collective's tensors when the
    interpreter shuts down then aborts the process ("terminate called without an active exception", exit -6),
    after all its work is done. Imported first, they bind None.
    """
    import torch.distributed.nn.functional  # noqa: F401


def _stop_on_sigterm() -> None:
    """torchrun stops the other processes with SIGTERM when one fails; make it unwind like Ctrl+C, so that
    temporary files are removed and rank 0's folder lock is released (Python's default ends without cleanup)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the default
        pass


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str | None, timeout: timedelta = timedelta(hours=6)) -> Iterator[Runtime]:
    """The runtime of a sharded job (joined and left around it). The long default timeout lets processes with
    the slower shards finish before the others give up waiting."""
    rt = setup_runtime(device, timeout)
    try:
        yield rt
    finally:
        teardown(rt)


def shard(items: Sequence[T], rt: Runtime) -> list[T]:
    """This process's share of ``items``: every ``world_size``-th from ``rank`` (disjoint, together all)."""
    return list(items[rt.rank :: rt.world_size])


def all_gather(value: Any, rt: Runtime) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not rt.distributed:
        return [value]
    parts: list[Any] = [None] * rt.world_size
    dist.all_gather_object(parts, value)
    return parts


def all_ranks(fn: Callable[[], T], rt: Runtime) -> list[T]:
    """Run ``fn`` on every process and return every process's result, in rank order, on every process.

    If ``fn`` raises on some process, every process raises: rank 0 its own error, or an OtherProcessError with
    the first failed process's message; the others an OtherProcessError (which the ``pdfnet`` command does not
    print: rank 0 reports once). A process whose error is not a PDFNetError (a bug, a full disk) prints its
    traceback first. Every process calls this the same number of times (it is a collective call).
    """
    return _agree(fn, rt, gather=True)


def everywhere(fn: Callable[[], T], rt: Runtime) -> T:
    """``fn()`` on every process, each keeping its own result (nothing is sent), stopping all together if it
    raises on any, as :func:`all_ranks`."""
    return _agree(fn, rt, gather=False)


def _agree(fn: Callable[[], T], rt: Runtime, gather: bool) -> Any:
    try:
        result, error = fn(), None
    except Exception as e:
        result, error = None, e
    if not rt.distributed:
        if error is not None:
            raise error
        return [result] if gather else result
    if error is not None and not rt.is_main and not isinstance(error, PDFNetError):
        traceback.print_exception(error)  # a bug: its traceback, from the process that met it (rank 0 raises it)
    message = None if error is None else (str(error) if isinstance(error, PDFNetError) else repr(error))
    parts = all_gather((result if gather else None, message), rt)
    failed = [(rank, m) for rank, (_, m) in enumerate(parts) if m is not None]
    if rt.is_main and error is not None:
        raise error
    if failed:
        rank, message = failed[0]
        raise OtherProcessError(f"process {rank} of {rt.world_size} stopped: {message}") from error
    return [value for value, _ in parts] if gather else result


def on_main(fn: Callable[[], T], rt: Runtime) -> T:
    """``fn()`` run by rank 0 only, its result (or its error) shared with every process."""
    return all_ranks(fn if rt.is_main else (lambda: None), rt)[0]


def gather_dict(values: dict, rt: Runtime) -> dict:
    """The union of every process's dict (a no-op in one process)."""
    return {k: v for part in all_gather(values, rt) for k, v in part.items()}


def any_process(flag: bool, rt: Runtime, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so that all stop together)."""
    t = torch.tensor(1.0 if flag else 0.0, device=device)
    if rt.distributed:
        dist.all_reduce(t)
    return bool(t > 0)


def log(rt: Runtime, message: str) -> None:
    """A line on the main process's stderr, above any progress bar."""
    if rt.is_main:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


@contextmanager
def held_by_main(lock, rt: Runtime) -> Iterator[None]:
    """Hold ``lock`` (a FolderLock) on rank 0 for the whole job; every process raises if it cannot be taken.
    Release it only after the last collective call inside, so that no process still writes when it goes."""
    on_main(lock.__enter__, rt)
    try:
        yield
    finally:
        if rt.is_main:
            lock.__exit__(None, None, None)
