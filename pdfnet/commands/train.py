"""``pdfnet train``: train PDFNet on DIS-5K from a config file and ``key=value`` overrides."""

from __future__ import annotations

import argparse

HELP = "train PDFNet (configs/*.yaml plus key=value overrides)"
EXAMPLES = """examples:
  pdfnet train --config configs/pdfnet_dis5k.yaml data.root=data/DIS5K output_dir=runs/pdfnet
  pdfnet train --config configs/pdfnet_dis5k.yaml output_dir=runs/pdfnet --resume auto
  torchrun --nproc_per_node 4 train.py --config configs/pdfnet_dis5k.yaml"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Train PDFNet. Settings: the paper's defaults, then --config's differences, then overrides."
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--config", help="YAML file of differences from the defaults (configs/)")
    p.add_argument(
        "--resume",
        help="'auto' (output_dir/last.pt when it exists, else a fresh start) or a checkpoint path; without "
        "--config the run's stored settings are used",
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. train.epochs=2 (anywhere)")


def run(args: argparse.Namespace) -> int:
    from ..training.engine import run_config, train

    cfg, resume_path = run_config(args.config, args.overrides, args.resume)
    train(cfg, resume=resume_path if resume_path is not None else args.resume)
    return 0
