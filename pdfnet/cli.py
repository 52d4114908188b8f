"""The ``pdfnet`` command (also ``python -m pdfnet``): one subcommand per job.

A mistake in the input (a wrong path, a broken file, a bad setting) ends in one line, ``error: ...``, naming the
culprit, and a non-zero exit status: 2 for a wrong flag, 1 for everything else; anything else is a bug.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .commands import COMMANDS
from .errors import ConfigError, PDFNetError


def _command(name: str):
    return import_module(f".commands.{COMMANDS[name]}", __package__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdfnet", description="PDFNet: high-precision dichotomous image segmentation (cutouts, training, testing)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name in COMMANDS:
        module = _command(name)
        module.add_arguments(commands.add_parser(name, help=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit status."""
    from .memory import keep_freed_memory

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS and argv[0] != "evaluate":
        # before anything allocates: PyTorch reads the switch at its first CPU allocation. The scorer and the
        # help run without PyTorch (importing it takes seconds, more than a cached run's scoring of a split)
        from .model.fastpath import use_huge_pages

        use_huge_pages()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after other flags (argparse takes positionals in one run only)
        if args.command in ("train", "finetune") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command not in ("predict", "serve"):
        # the cutout commands, run on laptops, let freed memory go: two 2048-pixel photos with
        # Depth-Anything-V2-Large in bf16 on a CPU peaked at 2.85 GiB instead of 3.06, 3-4% slower
        keep_freed_memory()
    try:
        return _command(args.command).run(args)
    except PDFNetError as e:
        from .distributed import LaunchError, OtherProcessError, is_main_process

        # under torchrun rank 0 reports the errors every process meets alike: one agreed on (the others'
        # OtherProcessError), a bad launch, a bad config (the same files and flags for all)
        if is_main_process() or not isinstance(e, OtherProcessError | LaunchError | ConfigError):
            print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl+C, or torchrun stopping the other processes after one failed
        from .distributed import is_main_process

        if is_main_process():
            again = " with --resume auto" if args.command in ("train", "finetune") else ""
            print(f"interrupted; finished outputs are kept and a rerun{again} continues", file=sys.stderr)
        return 130


def shim(command: str) -> int:
    """The body of the top-level scripts (``train.py``, ``test.py``, ...): the subcommand with their flags."""
    return main([command, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
