"""Parameters and forward FLOPs of PDFNet and of every ablation in configs/ablations/ (README.md, Studies).

    python scripts/ablation_table.py                      # Swin-B PDFNet at 1024 pixels: the README's table
    python scripts/ablation_table.py --size 2048
    python scripts/ablation_table.py --base configs/tiny.yaml --size 512   # the tiny network (seconds)

Each network is built from ``--base`` (default: the paper's config) with the ablation file's differences on top,
with random weights, and moved to PyTorch's meta device, where a forward pass computes shapes and no numbers:
``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of its convolutions and matrix products (a
multiply-add is 2 FLOPs; PyTorch's convention; halve them for MACs), with the fast paths off, i.e. the original's
computation. Columns: parameters of the network that trains (with the depth refinement head, where it has one)
and of the one that predicts (the Predictor drops the head); forward GFLOPs of one image at ``--size`` when
predicting and when training (the head included); and, on its own line, what Depth-Anything-V2-Large adds to every
variant that reads depth. The first line of an ablation file's comment names it in the table.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pdfnet import ModelConfig, build_pdfnet
from pdfnet.config import load_config
from pdfnet.errors import PDFNetError
from pdfnet.model.fastpath import fastpath
from pdfnet.model.network import count_parameters

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "configs" / "ablations"


def forward_flops(model: nn.Module, size: int, device: str | torch.device = "meta") -> int:
    """FLOPs of ``model``'s forward pass over one (1, 3, size, size) image and its (1, 1, size, size) depth, in
    its current mode, fast paths off (the original's computation). On the meta device nothing is computed.

    Attention runs through PyTorch's math kernel, two matrix products the counter sees (it does not count the
    fused CPU kernel's: on a CPU without this, every attention would be left out).
    """
    image = torch.randn(1, 3, size, size, device=device)
    depth = torch.rand(1, 1, size, size, device=device)
    with torch.no_grad(), fastpath(False), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(image, depth)
    return counter.get_total_flops()


def measure(cfg: ModelConfig, size: int) -> dict[str, float]:
    """Parameters (millions) and forward GFLOPs at ``size`` of the network ``cfg`` describes."""
    torch.manual_seed(0)
    model = build_pdfnet(cfg).to("meta")  # built on the CPU: Swin's initialisation reads numbers
    train_flops = forward_flops(model.train(), size) if model.depth_decoder is not None else None
    row = {"params_train": count_parameters(model) / 1e6}
    model.depth_decoder = None  # what the Predictor runs
    row["params_predict"] = count_parameters(model) / 1e6
    row["gflops_predict"] = forward_flops(model.eval(), size) / 1e9
    row["gflops_train"] = (train_flops if train_flops is not None else forward_flops(model.train(), size)) / 1e9
    return row


def describe(path: Path) -> str:
    """What an ablation file removes: its first comment line, up to a colon."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").split(":")[0].rstrip(".")
    return path.stem


def table_rows(base: str | None, size: int, files: list[Path]) -> list[dict]:
    """One row for the base network (the paper's PDFNet by default), then one per ablation file."""
    size_setting = [f"data.input_size={size}"]
    base_cfg = load_config(base, size_setting)
    first = {"config": base or "(defaults)", "removes": "nothing" if base else "nothing: the paper's PDFNet"}
    rows = [{**first, **measure(base_cfg.model, size)}]
    for path in files:
        cfg = load_config(path, size_setting, base=base_cfg)
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        rows.append({"config": name, "removes": describe(path), **measure(cfg.model, size)})
    return rows


def depth_model_row(size: int = 518) -> dict[str, float]:
    """Depth-Anything-V2-Large (random weights, the architecture of scripts/benchmark.py) at its input size."""
    # benchmark.py is a script beside this one, not a module of the package: read it as a file
    depth_anything_large = runpy.run_path(str(Path(__file__).with_name("benchmark.py")))["depth_anything_large"]
    model = depth_anything_large().to("meta").eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.empty(1, 3, size, size, device="meta"))
    return {"params": count_parameters(model) / 1e6, "gflops": counter.get_total_flops() / 1e9}


def markdown(rows: list[dict], size: int) -> str:
    reference = rows[0]["gflops_predict"]
    lines = [
        f"| config | removes | params, training (M) | params, predicting (M) | GFLOPs predicting ({size} px) | "
        "GFLOPs training forward | predicting vs first row |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['removes']} | {r['params_train']:.2f} | {r['params_predict']:.2f} | "
            f"{r['gflops_predict']:.1f} | {r['gflops_train']:.1f} | {r['gflops_predict'] / reference:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="config the ablations apply to (default: the paper's, i.e. no file)")
    p.add_argument("--size", type=int, default=1024, help="input side (default 1024, as the paper)")
    p.add_argument("--configs", nargs="*", type=Path, help="ablation files (default: configs/ablations/*.yaml)")
    p.add_argument("--no-depth-model", action="store_true", help="leave out the Depth-Anything-V2-Large line")
    args = p.parse_args(argv)
    files = [f.resolve() for f in args.configs] if args.configs else sorted(ABLATIONS.glob("*.yaml"))
    try:
        rows = table_rows(args.base, args.size, files)
    except PDFNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(rows, args.size))
    if not args.no_depth_model:
        depth = depth_model_row()
        print(
            f"\nEvery variant that reads depth also runs Depth-Anything-V2-Large when it predicts from photos: "
            f"{depth['params']:.1f} M parameters, {depth['gflops']:.1f} GFLOPs at its 518-pixel input."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
