"""Peak memory of a PDFNet training step, with and without activation checkpointing (and a frozen encoder).

    python scripts/benchmark_training_memory.py                          # CUDA: bf16, batch 1 and 4
    python scripts/benchmark_training_memory.py --device cpu --precision fp32 --batches 1 2
    python scripts/benchmark_training_memory.py --device cpu --batches 1 --modes plain checkpoint freeze
    python scripts/benchmark_training_memory.py --device cpu --size 512 --batches 1 --modes plain freeze lora

The network is the full Swin-B PDFNet (random weights: memory does not depend on them) with its depth head, as
``build_training_model`` makes it for ``train.checkpoint_activations`` and ``train.freeze``; each row runs one
step (forward under autocast, the training loss, backward, AdamW step, with the optimiser's state already made,
as from a run's second step on) on random inputs of ``--size`` pixels in a fresh process. On a GPU the peak is
``torch.cuda.max_memory_allocated``; on a CPU the process's peak resident memory (``ru_maxrss``: weights,
optimiser state and the libraries included; the "before" column is what the process held before its first
step). A row that would pass ``--max-gib`` of resident memory on a CPU is stopped and reported as such, so that
the measurement never pushes a shared machine out of memory.

The ``lora`` mode (it needs ``pip install peft``; the package does not use it) measures what LoRA adapters on the
encoder would give instead of ``train.freeze=encoder``: rank-8 adapters (peft's LoraConfig, alpha 16) on every
Swin block's qkv, proj, fc1 and fc2, the encoder's own weights frozen, the decoder trained. "checkpoint MB" is
what ``last.pt`` would hold: the weights and the optimiser's state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

from pdfnet.model.fastpath import use_huge_pages

use_huge_pages()  # as the command-line tools do, before torch allocates anything

import torch  # noqa: E402

from pdfnet.config import load_config  # noqa: E402
from pdfnet.distributed import Runtime  # noqa: E402
from pdfnet.runtime import autocast  # noqa: E402
from pdfnet.training.engine import build_training_model  # noqa: E402
from pdfnet.training.losses import pdfnet_loss  # noqa: E402
from pdfnet.training.schedule import build_optimizer  # noqa: E402

MODES = {
    "plain": [],
    "checkpoint": ["train.checkpoint_activations=true"],
    "freeze": ["train.freeze=encoder"],
    "freeze+checkpoint": ["train.freeze=encoder", "train.checkpoint_activations=true"],
    "lora": [],
}
LORA_TARGETS = r".*blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


def add_lora(model: torch.nn.Module) -> int:
    """Rank-8 LoRA adapters on the encoder's block layers, the encoder's own weights frozen; returns the
    adapters' parameter count."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS), model.encoder)
    adapters = 0
    for name, p in model.encoder.named_parameters():
        p.requires_grad_("lora_" in name)
        adapters += p.numel() if "lora_" in name else 0
    return adapters


STOPPED = 3  # exit status of a row stopped by --max-gib


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def guard(limit_gib: float) -> None:
    """Stop this process (exit status STOPPED) as soon as its resident memory passes ``limit_gib``."""

    def watch() -> None:
        while True:
            if rss_gib() > limit_gib:
                print(json.dumps({"stopped_at_gib": limit_gib}), flush=True)
                os._exit(STOPPED)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(device: torch.device, precision: str, size: int, batch: int, mode: str) -> dict:
    """One row: a training step of the full network; its peak memory and seconds."""
    cfg = load_config(None, ["train.precision=" + precision, *MODES[mode]])
    model = build_training_model(cfg, Runtime(device))
    adapters = add_lora(model) if mode == "lora" else 0
    model = model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, size, size, generator=gen).to(device)
    depth = torch.rand(batch, 1, size, size, generator=gen).to(device)
    mask = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float().to(device)
    # the optimiser's state as a run holds it from its second step on (a step on zero gradients makes it)
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_gib(device) if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**30
    start = time.perf_counter()
    with autocast(device, precision):
        output = model(image, depth)
    loss = pdfnet_loss(output, mask, depth, variant=cfg.model.variant)["total"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tensors = list(model.state_dict().values()) + [
        t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)
    ]
    checkpoint_mb = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    return {
        "before_gib": before,
        "peak_gib": peak_gib(device),
        "s_per_step": seconds,
        "trainable": trainable,
        "adapters": adapters,
        "checkpoint_mb": checkpoint_mb,
    }


def run_row(spec: dict, args) -> dict:
    """``spec`` in a fresh process (its peak memory its own)."""
    command = [sys.executable, __file__, "--device", args.device, "--size", str(args.size)]
    command += ["--precision", args.precision, "--max-gib", str(args.max_gib), "--row", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    if done.returncode == STOPPED:
        return {"stopped_at_gib": args.max_gib}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(last)


def describe(spec: dict, result: dict, device: torch.device) -> str:
    head = f"| {spec['batch']} | {spec['mode']} |"
    if "stopped_at_gib" in result:
        return f"{head} over {result['stopped_at_gib']:g} GiB (stopped) | | | | |"
    if "oom" in result:
        return f"{head} out of memory | | | | |"
    if "error" in result:
        return f"{head} failed: {result['error']} | | | | |"
    return (
        f"{head} {result['peak_gib']:.2f} | {result['before_gib']:.2f} | {result['s_per_step']:.1f} | "
        f"{result['trainable'] / 1e6:.2f} M | {result['checkpoint_mb']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 4 (GPU), 1 2 (CPU)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["plain", "checkpoint"])
    parser.add_argument("--max-gib", type=float, default=18.0, help="stop a CPU row past this resident memory")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.precision = args.precision or ("bf16" if gpu else "fp32")
    if args.row:
        spec = json.loads(args.row)
        if not gpu:
            guard(args.max_gib)
        try:
            result = measure(device, args.precision, args.size, spec["batch"], spec["mode"])
        except torch.OutOfMemoryError:
            result = {"oom": True}
        print(json.dumps(result), flush=True)
        return
    where = torch.cuda.get_device_name(device) if gpu else f"{platform.machine()}, {torch.get_num_threads()} threads"
    memory = "torch.cuda.max_memory_allocated" if gpu else "peak RSS of the process"
    print(f"PDFNet (Swin-B) training step, {args.size} px, {args.precision}, {where}; torch {torch.__version__}")
    print(
        f"| batch | mode | peak GiB ({memory}) | before the step GiB | s/step | trainable parameters | checkpoint MB |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for batch in args.batches or ([1, 4] if gpu else [1, 2]):
        for mode in args.modes:
            spec = {"batch": batch, "mode": mode}
            result = run_row(spec, args)
            rows.append({**spec, **result})
            print(describe(spec, result, device), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "precision": args.precision, "size": args.size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
