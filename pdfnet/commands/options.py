"""argparse value types that check numbers where they are parsed, so a bad flag is a one-line usage error."""

from __future__ import annotations

import argparse

# runtime.PRECISIONS' names and runtime.AUTO_MAX_INPUT_SIZE, written out: runtime imports torch, and ``pdfnet
# evaluate`` (which parses these options too) runs without it (tests/test_evaluate.py checks both agree)
PRECISION_NAMES = ("fp32", "fp16", "bf16")
AUTO_MAX_INPUT_SIZE = 2048


def _checked_int(check, expected: str, doc: str):
    """An argparse type: an integer for which ``check`` holds, else a usage error saying ``expected``."""

    def parse(text: str) -> int:
        value = _int(text)
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__doc__ = doc
    return parse


positive_int = _checked_int(lambda v: v >= 1, "a positive integer", "At least 1 (batch sizes, processes).")
non_negative_int = _checked_int(lambda v: v >= 0, "0 or a positive integer", "0 or more (loader workers).")
input_size = _checked_int(
    lambda v: v >= 256 and v % 256 == 0,
    "a multiple of 256 (256, 512, ..., 1024, ...)",
    "The network's input side: a positive multiple of 256 (the model was trained at 1024).",
)


def input_size_or_auto(text: str) -> int | str:
    """The network's input side (:func:`input_size`), or ``auto`` / ``auto:N``: chosen per image from its longer
    side, at most 2048 (or N, a multiple of 256); ``auto`` is returned as ``auto:2048``, what it means."""
    if text == "auto" or text.startswith("auto:"):
        cap = text.partition(":")[2] or str(AUTO_MAX_INPUT_SIZE)
        if not (cap.isdigit() and int(cap) >= 256 and int(cap) % 256 == 0):
            raise argparse.ArgumentTypeError(f"expected auto:N with N a multiple of 256 (auto:1536), got {text}")
        return f"auto:{int(cap)}"
    try:
        return input_size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 256 (256, 512, ..., 1024, ...) or auto, got {text}"
        ) from None


depth_input_size = _checked_int(
    lambda v: v >= 14,
    "at least 14 (518 is Depth-Anything-V2's size)",
    "Depth-Anything-V2's input side: at least 14 (its patch), 518 by default.",
)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_depth_kind_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth-kind",
        choices=["disparity", "metric"],
        help="what the depth model predicts: disparity (near is large: Depth-Anything, DPT/MiDaS) or metric depth "
        "(near is small: ZoeDepth, Depth Pro, GLPN; stored as 1/depth); default: known from the model's family",
    )


def add_device_options(parser: argparse.ArgumentParser, precision_default: str = "fp32") -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--precision", choices=list(PRECISION_NAMES), default=precision_default)
