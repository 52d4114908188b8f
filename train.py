"""Train PDFNet on DIS-5K.

python train.py --config configs/pdfnet_dis5k.yaml data.root=data/DIS5K output_dir=runs/pdfnet
python train.py --config configs/pdfnet_dis5k.yaml output_dir=runs/pdfnet --resume auto
torchrun --nproc_per_node 4 train.py --config configs/pdfnet_dis5k.yaml train.batch_size=1
"""

import argparse
import sys

from pdfnet.config import ConfigError, load_config
from pdfnet.engine import NonFiniteLossError, train
from pdfnet.memory import keep_freed_memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of differences from the defaults (configs/)")
    parser.add_argument("--resume", help="'auto' (output_dir/last.pt when it exists) or a checkpoint path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, resume=args.resume)
    except (NonFiniteLossError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
