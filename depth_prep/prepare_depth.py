"""Make the Depth-Anything-V2 pseudo-depth maps that PDFNet's training and testing read (``pdfnet depth``).

    python depth_prep/prepare_depth.py --data-root data/DIS5K --splits DIS-TR DIS-VD --model large \
        --out-name depth_large

See the README's "Pseudo-depth" section for the four folders the original uses.
"""

import sys

from pdfnet.cli import shim

if __name__ == "__main__":
    sys.exit(shim("depth"))
