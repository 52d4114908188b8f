"""The one switch for PDFNet's speed tricks, and the tricks that are not a module's own computation.

Every fast path computes what the plain code beside it computes, up to float rounding, and is tested against
it: the oneDNN linear with fused bias and GELU (Swin blocks on the CPU), the CoA attention in blocks of queries
(the CPU's bfloat16 mode), attention over real tokens for maps that fit one Swin window, the shallow branch's
two convolutions folded into one, norms and residuals written in place at inference, channels-last memory on
the CPU, and (:func:`use_huge_pages`, for the command-line tools) large CPU tensors on transparent huge pages.

Switch them all off with ``PDFNET_FASTPATH=0`` in the environment (read once, at first use, as timm reads
``TIMM_FUSED_ATTN``) or from Python with :func:`set_fastpath` / :func:`fastpath`. Fast paths also step aside by
themselves where they would change what runs: a layer that is not a plain ``nn.Linear`` (a LoRA/PEFT wrapper,
a quantised layer) or that carries hooks is called as itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime

ENV_VAR = "PDFNET_FASTPATH"
_override: bool | None = None
_from_env: bool | None = None


def fastpath_enabled() -> bool:
    """Whether the fast paths may run: :func:`set_fastpath`'s setting, else ``PDFNET_FASTPATH`` (default on)."""
    global _from_env
    if _override is not None:
        return _override
    if _from_env is None:
        _from_env = os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")
    return _from_env


THP_ENV_VAR = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> None:
    """Ask PyTorch to place CPU tensors of 2 MiB and more on transparent huge pages (its own switch,
    ``THP_MEM_ALLOC_ENABLE``), unless ``PDFNET_FASTPATH=0`` is in the environment or the variable is set already.

    PyTorch reads the variable once, at the process's first CPU allocation of any size, so this must run before
    anything allocates: the command-line tools and the benchmark call it first thing; in Python, set the variable
    yourself before using torch. Being fixed for the process, it is not switched by :func:`set_fastpath`.

    Every large tensor of a forward is fresh memory, and its first touch costs a page fault per 4 KiB page:
    filling a fresh 256 MiB tensor took 62 ms against 9 ms on huge pages (2 cores, Zen 5, Linux's default
    ``madvise`` mode). The numbers are the same either way; the memory is taken in 2 MiB steps. Without effect
    where huge pages are off, and outside Linux.
    """
    if os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no"):
        os.environ.setdefault(THP_ENV_VAR, "1")


def set_fastpath(enabled: bool | None) -> None:
    """Switch every fast path on or off for this process; None returns to the environment's setting."""
    global _override
    _override = None if enabled is None else bool(enabled)


@contextmanager
def fastpath(enabled: bool) -> Iterator[None]:
    """``with fastpath(False): ...`` runs the plain computation inside the block."""
    global _override
    previous = _override
    _override = bool(enabled)
    try:
        yield
    finally:
        _override = previous


def tracks_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on these tensors: in-place shortcuts are safe only where it does
    not."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def in_place_ok(*tensors: torch.Tensor) -> bool:
    """May inference write into these fresh float32 buffers? (fast paths on, no autograd)."""
    return fastpath_enabled() and not tracks_grad(*tensors)


def is_plain(module: nn.Module, cls: type[nn.Module]) -> bool:
    """``module`` is exactly ``cls`` (no subclass, wrapper or quantised swap) with no hooks: a fast path that
    bypasses its ``__call__`` computes exactly what calling it would."""
    if type(module) is not cls:
        return False
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks)
    global_hooks = (
        getattr(nn.modules.module, "_global_forward_hooks", None),
        getattr(nn.modules.module, "_global_forward_pre_hooks", None),
    )
    return not any(hooks) and not any(g for g in global_hooks if g)


def _probe_onednn_linear(dtype: torch.dtype):
    """PyTorch's private oneDNN linear with a fused activation for ``dtype``, if this build has it and it runs
    here: tried once on a tiny input, so a build or CPU where it exists but fails falls back to the plain
    layers."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w, b = (t.to(dtype) for t in (torch.ones(2, 4), torch.ones(3, 4), torch.zeros(3)))
        out = op(x, w, b, "gelu", [], "none")
        if not torch.allclose(out.float(), F.gelu(F.linear(x.float(), w.float(), b.float())), atol=2e-2):
            return None
        return op
    except Exception:  # any failure (missing op, unsupported CPU, changed signature) means: not available
        return None


_ONEDNN_LINEAR: dict[torch.dtype, object] = {}  # probed at first use, per dtype


def _onednn_linear(dtype: torch.dtype = torch.float32):
    if dtype not in _ONEDNN_LINEAR:
        _ONEDNN_LINEAR[dtype] = _probe_onednn_linear(dtype)
    return _ONEDNN_LINEAR[dtype]


def linear(layer: nn.Module, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, then the exact (erf) GELU when ``gelu``: (..., in) -> (..., out).

    Fast path: on the CPU in float32 or bfloat16 (weights and tokens alike) without autograd, one oneDNN call
    with the bias and the GELU fused (PyTorch's own binding, the one its compiler emits), so no separate pass
    copies the bias in and none applies the activation. On Swin-B's token shapes (2 cores, float32) a layer
    with its GELU took 20-50% less time, one without between 5% more and 15% less; the encoder's third stage
    went from 5.0-5.2 s to 4.1-4.2 s per 1024-pixel forward. In bfloat16 it also avoids the per-call weight
    copy of PyTorch's own bfloat16 linear. Results agree within float rounding.
    """
    op = None
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and fastpath_enabled()
        and is_plain(layer, nn.Linear)
        and layer.weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
        and not tracks_grad(x, layer.weight)
    ):
        op = _onednn_linear(x.dtype)
    if op is not None:
        return op(x, layer.weight, layer.bias, "gelu" if gelu else "none", [], "none" if gelu else "")
    y = layer(x)
    return F.gelu(y) if gelu else y


@functools.cache
def _bf16_products_fast() -> bool:
    return runtime.cpu_bf16_supported() and runtime.cpu_bf16_faster()


CPU_QUERY_BLOCK = 256  # queries per block of :func:`attention` on the CPU: (256, Nk) weights stay in the caches


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)``: (B, h, Nq, d) queries, (B, h, Nk, d) keys
    and values -> (B, h, Nq, d).

    Fast path: bfloat16 on the CPU without autograd or autocast (the Predictor's CPU bf16 mode), blocks of 256
    queries through oneDNN's bfloat16 matrix products, the softmax of each (256, Nk) block computed in float32
    and rounded once to bfloat16. PyTorch's fused CPU kernel does the same products in float32 on small tiles;
    on the CoA's 16384 x 16384 attention of a 1024-pixel input (2 cores, Zen 5) it took 0.69 s against 0.26 s.
    The logits are rounded to bfloat16 where the fused kernel keeps them in float32: on random inputs the mean
    error from float32 grows from 2.2e-5 to 2.4e-5 (logits of standard deviation 0.5) or from 2.2e-4 to 5.0e-4
    (standard deviation 2), a fraction of the bfloat16 network's own error. Only where bfloat16 products beat
    float32 ones (:func:`pdfnet.runtime.cpu_bf16_faster`): elsewhere the fused kernel's float32 tiles are faster.
    """
    if not (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and dropout_p == 0.0
        and fastpath_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not tracks_grad(q, k, v)
        and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]  # no broadcasting
        and v.shape[-1] == q.shape[-1]
        and _bf16_products_fast()
    ):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    # scaled by oneDNN in float32 before its one rounding of the logits (alpha), not by a rounded copy of q;
    # written into one (B h, 256, Nk) buffer, block after block
    kt = k.transpose(-2, -1).contiguous().flatten(0, -3)  # once, not a copy in every block's product
    q3, v3 = q.flatten(0, -3), v.flatten(0, -3)
    out = torch.empty_like(q3)
    logits = torch.empty(q3.shape[0], min(CPU_QUERY_BLOCK, q3.shape[1]), kt.shape[-1], dtype=q.dtype)
    for start in range(0, q3.shape[1], CPU_QUERY_BLOCK):
        block = q3[:, start : start + CPU_QUERY_BLOCK]
        scores = logits[:, : block.shape[1]].baddbmm_(block, kt, beta=0.0, alpha=q.shape[-1] ** -0.5)
        torch.bmm(torch.softmax(scores, dim=-1), v3, out=out[:, start : start + CPU_QUERY_BLOCK])
    return out.view(q.shape)
