"""Score a folder of predictions against DIS masks with the field's metrics (``pdfnet evaluate``).

python metric_tools/evaluate.py --pred runs/test/preds/DIS-TE1 --gt data/DIS5K/DIS-TE1/masks --out te1.json
"""

import sys

from pdfnet.cli import shim

if __name__ == "__main__":
    sys.exit(shim("evaluate"))
