"""Speed and memory of PDFNet: inference (network alone and with Depth-Anything-V2) and training steps.

    python scripts/benchmark.py                                   # CUDA when present, else a short CPU run
    python scripts/benchmark.py --device cuda --json bench.json   # the full table on a GPU
    python scripts/benchmark.py --device cpu --infer-batch 1 --precisions fp32 --no-train

    python scripts/benchmark.py --device cpu --precisions fp32 bf16 --no-train   # CPU fp32 against CPU bf16
    python scripts/benchmark.py --device cpu --no-depth --no-train --onnx exported/pdfnet.onnx  # + ONNX Runtime
    python scripts/benchmark.py --device cpu --precisions fp32 bf16 --alternate random --repeats 4  # Predictor

Warm-up runs, synchronised timing, the median of several runs; prints a table and the device and versions,
and writes JSON with --json. Weights are random (speed does not depend on them); the depth model is
Depth-Anything-V2-Large's architecture, randomly initialised, run at its 518-pixel input. On a CPU, bf16 is the
Predictor's CPU mode (weights and activations in bfloat16, no autocast), every row runs in a fresh process and
reports that process's peak resident memory. ``--alternate W`` times instead
``Predictor.from_checkpoint(W, depth_model=None, precision=P).predict(photo, depth)`` on the bundled photo at
``--size``, the precisions in turn in one process (``random``: a randomly initialised network), and prints the
speed-up over the first precision and the mean |dprob| from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from pdfnet.model.fastpath import use_huge_pages

use_huge_pages()  # as the command-line tools do, before torch allocates anything

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pdfnet import ModelConfig, build_pdfnet, pdfnet_loss  # noqa: E402
from pdfnet.errors import PDFNetError  # noqa: E402
from pdfnet.memory import keep_freed_memory  # noqa: E402
from pdfnet.runtime import autocast  # noqa: E402


def depth_anything_large():
    """Depth-Anything-V2-Large's architecture (transformers), random weights."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=518,
        out_indices=[5, 12, 18, 24],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=1024,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[256, 512, 1024, 1024],
        fusion_hidden_size=256,
        head_hidden_size=32,
    )
    return DepthAnythingForDepthEstimation(config).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int, repeats: int) -> float:
    """Median seconds per call over ``repeats`` runs of ``iters`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        runs.append((time.perf_counter() - start) / iters)
    return statistics.median(runs)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated, or on a CPU the process's peak resident memory (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bench_inference(args, device, precision: str, batch: int, compiled: bool, with_depth: bool) -> dict:
    model = build_pdfnet(replace(ModelConfig(), depth_head=False)).to(device).eval()
    depth_model = depth_anything_large().to(device) if with_depth else None
    S = args.size
    image = torch.randn(batch, 3, S, S, device=device)
    depth = torch.rand(batch, 1, S, S, device=device)
    if device.type == "cpu":  # as the Predictor runs on a CPU: weights in the run's precision, channels-last
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model.to(dtype=dtype, memory_format=torch.channels_last)
        image, depth = image.to(dtype), depth.to(dtype)
        depth_model = depth_model.to(dtype) if depth_model is not None else None
        precision = "fp32"  # no autocast: the tensors carry the precision
    net = torch.compile(model) if compiled else model

    @torch.inference_mode()
    def step():
        with autocast(device, precision):
            d = depth
            if depth_model is not None:
                small = F.interpolate(image, size=(518, 518), mode="bilinear", align_corners=False)
                d = depth_model(pixel_values=small).predicted_depth[:, None]
                d = F.interpolate(d.float(), size=(S, S), mode="bilinear", align_corners=True).to(image.dtype)
            return net(image, d).logits[0]

    reset_peak(device)
    seconds = timed(step, device, args.warmup, args.iters, args.repeats)
    return {"images_per_s": batch / seconds, "ms_per_image": 1000 * seconds / batch, "peak_gib": peak_gib(device)}


def bench_training(args, device, precision: str, batch: int, compiled: bool) -> dict:
    model = build_pdfnet(ModelConfig()).to(device).train()
    net = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    S = args.size
    image, depth = torch.randn(batch, 3, S, S, device=device), torch.rand(batch, 1, S, S, device=device)
    mask = (torch.rand(batch, 1, S, S, device=device) > 0.5).float()

    def step():
        with autocast(device, precision):
            out = net(image, depth)
        loss = pdfnet_loss(out, mask, depth)["total"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    seconds = timed(step, device, args.warmup, args.iters, args.repeats)
    return {"images_per_s": batch / seconds, "s_per_step": seconds, "peak_gib": peak_gib(device)}


def bench_onnx(args, batch: int) -> dict:
    """ONNX Runtime on the CPU running a graph of ``pdfnet export`` (at the graph's size)."""
    from pdfnet.model.onnx import OnnxNetwork

    network = OnnxNetwork(args.onnx, ["CPUExecutionProvider"])
    S = network.input_size
    image, depth = torch.randn(batch, 3, S, S), torch.rand(batch, 1, S, S)
    seconds = timed(lambda: network(image, depth), torch.device("cpu"), args.warmup, args.iters, args.repeats)
    return {
        "images_per_s": batch / seconds,
        "ms_per_image": 1000 * seconds / batch,
        "peak_gib": peak_gib(torch.device("cpu")),
    }


def guarded(bench, args, device: torch.device, *rest) -> dict:
    """Run one measurement; out of memory is a result ("oom"), not the end of the table."""
    try:
        return bench(args, device, *rest)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"images_per_s": 0.0, "oom": True, "peak_gib": None}


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--infer-batch", type=int, nargs="+", default=None, help="default: 1 8 (GPU), 1 (CPU)")
    parser.add_argument("--train-batch", type=int, nargs="+", default=None, help="default: 1 4 (GPU), none (CPU)")
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 fp16 (GPU), fp32 (CPU)")
    parser.add_argument("--compile", choices=["off", "on", "both"], default=None, help="default: both (GPU), off")
    parser.add_argument("--no-depth", action="store_true", help="skip the runs with the depth model")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--onnx", help="also time this graph of pdfnet export with ONNX Runtime (CPU)")
    parser.add_argument(
        "--alternate", metavar="WEIGHTS", help="time the Predictor's precisions in turn (a checkpoint, or random)"
    )
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one row, in a fresh process (CPU peak memory)
    args = parser.parse_args()
    if not args.alternate:  # the Predictor's timing runs as a Python program would, without it
        keep_freed_memory()  # as the command-line tools for many images do
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.infer_batch = args.infer_batch or ([1, 8] if gpu else [1])
    args.train_batch = [] if args.no_train else (args.train_batch or ([1, 4] if gpu else []))
    args.precisions = args.precisions or (["fp32", "bf16", "fp16"] if gpu else ["fp32"])
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile or ("both" if gpu else "off")]
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.iters = args.iters or (10 if gpu else 1)
    args.repeats = args.repeats or (5 if gpu else 1)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    if args.row:
        print(json.dumps(run_row(args, device, json.loads(args.row))))
        return
    if args.alternate:
        try:
            alternate(args, device)
        except PDFNetError as e:  # a missing or broken checkpoint: one line, not a traceback
            sys.exit(f"error: {e}")
        return

    env = environment(device)
    print(json.dumps(env))
    specs = []
    for compiled in compile_modes:
        for precision in args.precisions:
            for with_depth in [False] + ([] if args.no_depth else [True]):
                for batch in args.infer_batch:
                    specs.append(
                        {
                            "job": "infer+depth" if with_depth else "infer",
                            "precision": precision,
                            "batch": batch,
                            "compile": compiled,
                        }
                    )
            for batch in args.train_batch:
                specs.append({"job": "train", "precision": precision, "batch": batch, "compile": compiled})
    if args.onnx:
        specs += [{"job": "infer", "precision": "onnxruntime", "batch": b, "compile": False} for b in args.infer_batch]
    rows = []
    for spec in specs:
        # on a CPU every row runs in a fresh process, so that its peak resident memory is its own
        result = _in_subprocess(spec) if device.type == "cpu" else run_row(args, device, spec)
        rows.append({**spec, **result})
        print(_format(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "size": args.size, "results": rows}, indent=2))


def run_row(args, device: torch.device, spec: dict) -> dict:
    if spec["precision"] == "onnxruntime":
        return bench_onnx(args, spec["batch"])
    if spec["job"] == "train":
        return guarded(bench_training, args, device, spec["precision"], spec["batch"], spec["compile"])
    with_depth = spec["job"] == "infer+depth"
    return guarded(bench_inference, args, device, spec["precision"], spec["batch"], spec["compile"], with_depth)


def _in_subprocess(spec: dict) -> dict:
    argv = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if "--json" in sys.argv:  # drop the flag's value too
        i = sys.argv.index("--json")
        argv = sys.argv[1:i] + sys.argv[i + 2 :]
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--row", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"images_per_s": 0.0, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def alternate(args, device: torch.device) -> None:
    """Predictor.predict in each precision in turn, ``--repeats`` rounds after ``--warmup`` (at least one)."""
    import tempfile

    import cv2
    import numpy as np

    from pdfnet import Predictor, to_official_state_dict

    photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "pdfnet" / "assets" / "chelsea.png"))
    photo = cv2.cvtColor(cv2.resize(photo, (args.size, args.size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2RGB)
    depth = cv2.GaussianBlur(photo.mean(axis=2).astype(np.float32) / 255, (0, 0), 8)  # a smooth stand-in
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.alternate
        if weights == "random":
            weights = str(Path(tmp) / "random.pth")
            torch.save(to_official_state_dict(build_pdfnet(ModelConfig())), weights)
        predictors = {
            p: Predictor.from_checkpoint(weights, device=device, depth_model=None, precision=p) for p in args.precisions
        }
    print(json.dumps({**environment(device), "size": args.size, "weights": args.alternate}))
    seconds = {p: [] for p in predictors}
    probs = {}
    for round_ in range(max(args.warmup, 1) + args.repeats):
        for p, predictor in predictors.items():
            start = time.perf_counter()
            probs[p] = predictor.predict(photo, depth)
            if round_ >= max(args.warmup, 1):
                seconds[p].append(time.perf_counter() - start)
    first = args.precisions[0]
    for p, times in seconds.items():
        runs = " ".join(f"{t:.2f}" for t in times)
        line = f"Predictor {p:<5} {runs} s (median {statistics.median(times):.2f})"
        if p != first:
            speedup = statistics.median(seconds[first]) / statistics.median(times)
            line += f"  {speedup:.2f}x {first}, mean |dprob| {np.abs(probs[p] - probs[first]).mean():.1e}"
        print(line, flush=True)


def _format(row: dict) -> str:
    head = f"{row['job']:<12} {row['precision']:<5} batch {row['batch']:<2} compile {str(row['compile']):<5}"
    if row.get("oom"):
        return f"{head} out of memory"
    if row.get("error"):
        return f"{head} failed: {row['error']}"
    mem = f"{row['peak_gib']:.1f} GiB" if row.get("peak_gib") is not None else "-"
    extra = f"{row['ms_per_image']:.1f} ms/img" if "ms_per_image" in row else f"{row['s_per_step']:.3f} s/step"
    return f"{head} {row['images_per_s']:8.2f} img/s  {extra:>14}  peak {mem}"


if __name__ == "__main__":
    main()
