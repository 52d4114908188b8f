"""Train PDFNet on DIS-5K (the same as ``pdfnet train``).

python train.py --config configs/pdfnet_dis5k.yaml data.root=data/DIS5K output_dir=runs/pdfnet
python train.py --config configs/pdfnet_dis5k.yaml output_dir=runs/pdfnet --resume auto
torchrun --nproc_per_node 4 train.py --config configs/pdfnet_dis5k.yaml train.batch_size=1
"""

import sys

from pdfnet.cli import shim

if __name__ == "__main__":
    sys.exit(shim("train"))
