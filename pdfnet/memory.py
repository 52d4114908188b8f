"""Process-level memory settings: the command-line tools for many images (test, train, depth) keep freed
memory for reuse, and loading a Predictor hands its float32 copies back."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS after every large tensor.

    PDFNet allocates many image-sized buffers per forward; by default each is mapped fresh and every page
    faulted in again. When this was added, that cost a CPU about a third of the time (a 1024x1024 forward on 2
    cores: 40 s without, 29 s with, measured with scripts/benchmark.py); the network allocates less now and
    gains less. Buffers over glibc's 32 MiB mapping limit are still mapped fresh. Called by the command-line
    tools other than ``predict`` and ``serve`` (which favour memory), never on import.
    Returns whether the settings took effect (False off glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 25)  # the largest value glibc accepts (32 MiB)
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 34)
        ok &= libc.mallopt(_M_TOP_PAD, 1 << 28)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc keep at most ``arenas`` malloc arenas for all threads. By default each thread that allocates gets
    one of its own (up to 8 per core), and what is freed in it stays there: a server whose many short-lived threads
    each parse an upload grows with every batch of concurrent requests. Call before starting threads. Returns
    whether the setting took effect (False off glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> bool:
    """Hand the memory freed so far back to the OS (glibc's ``malloc_trim``), e.g. a checkpoint's float32
    weights once converted, which :func:`keep_freed_memory` would otherwise hold for the whole run. Returns
    whether anything was released (False off glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def _glibc() -> ctypes.CDLL | None:
    """glibc, or None off Linux or where it cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
