"""argparse value types that check numbers where they are parsed, so a bad flag is a one-line usage error."""

from __future__ import annotations

import argparse

from ..runtime import PRECISIONS


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text}")
    return value


def input_size(text: str) -> int:
    """The network's input side: a positive multiple of 256 (the model was trained at 1024)."""
    value = _int(text)
    if value < 256 or value % 256:
        raise argparse.ArgumentTypeError(f"expected a multiple of 256 (256, 512, ..., 1024, ...), got {text}")
    return value


def depth_input_size(text: str) -> int:
    """Depth-Anything-V2's input side: at least 14 (its patch), 518 by default."""
    value = _int(text)
    if value < 14:
        raise argparse.ArgumentTypeError(f"expected at least 14 (518 is Depth-Anything-V2's size), got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_device_options(parser: argparse.ArgumentParser, precision_default: str = "fp32") -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default=precision_default)
