"""Predict the DIS splits with a PDFNet checkpoint and score them (the same as ``pdfnet test``).

python test.py --checkpoint checkpoints/PDFNet_Best.pth --data-root data/DIS5K --out runs/test --tta
"""

import sys

from pdfnet.cli import shim

if __name__ == "__main__":
    sys.exit(shim("test"))
