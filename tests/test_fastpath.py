"""Fast paths outside the Swin encoder: the CoA attention in blocks of queries (the CPU's bf16 mode) and huge
pages for large CPU tensors."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pdfnet.model import fastpath as fp
from pdfnet.model.fusion import CoA


@pytest.fixture
def bf16_products_fast(monkeypatch):
    """Take the blocked path whatever this CPU's vendor (its arithmetic is the same everywhere)."""
    monkeypatch.setattr(fp, "_bf16_products_fast", lambda: True)
    monkeypatch.setattr(fp, "CPU_QUERY_BLOCK", 64)  # several blocks and a partial last one on small inputs


def _qkv(nq=300, nk=170, batch=2, heads=3, dim=32, scale=2.0):
    torch.manual_seed(0)
    q = torch.randn(batch, heads, nq, dim) * scale
    return q, torch.randn(batch, heads, nk, dim), torch.randn(batch, heads, nk, dim)


def test_blocked_bf16_attention_is_as_close_to_fp32_as_the_fused_kernel(bf16_products_fast, monkeypatch):
    q, k, v = _qkv()
    exact = F.scaled_dot_product_attention(q, k, v)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    fused_err = (F.scaled_dot_product_attention(qb, kb, vb).float() - exact).abs().mean().item()

    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel ran instead of the blocked fast path")

    with torch.no_grad(), monkeypatch.context() as m:
        m.setattr(F, "scaled_dot_product_attention", refuse)
        out = fp.attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16 and out.shape == qb.shape
    err = (out.float() - exact).abs().mean().item()
    # the logits rounded once to bfloat16 (the fused kernel keeps them in float32): at most a few times its error
    assert err < 3 * fused_err and err < 2e-3, (err, fused_err)


CASES = ["float32", "grad", "fastpath off", "dropout", "slow bf16 products", "autocast", "value size", "broadcast"]


@pytest.mark.parametrize("case", CASES)
def test_attention_is_the_fused_kernel_outside_the_cpu_bf16_mode(case, bf16_products_fast, monkeypatch):
    q, k, v = _qkv(nq=70, nk=50)
    if case == "value size":
        v = torch.randn(2, 3, 50, 48)
    if case == "broadcast":  # one context for every query batch
        k, v = k[:1], v[:1]
    dtype = torch.float32 if case == "float32" else torch.bfloat16
    q, k, v = (t.to(dtype) for t in (q, k, v))
    if case == "slow bf16 products":
        monkeypatch.setattr(fp, "_bf16_products_fast", lambda: False)
    if case == "grad":
        q.requires_grad_(True)
    dropout = 0.5 if case == "dropout" else 0.0
    torch.manual_seed(1)
    with fp.fastpath(case != "fastpath off"), torch.autocast("cpu", torch.bfloat16, enabled=case == "autocast"):
        out = fp.attention(q, k, v, dropout_p=dropout)
        torch.manual_seed(1)
        expected = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    assert torch.equal(out, expected)


def test_coa_in_bf16_follows_float32(bf16_products_fast):
    torch.manual_seed(0)
    block = CoA(64).eval()
    query, context = torch.randn(2, 200, 64), torch.randn(2, 130, 64)
    with torch.no_grad():
        exact = block(query, context)
        low = block.to(torch.bfloat16)(query.bfloat16(), context.bfloat16()).float()
    assert (low - exact).abs().mean().item() < 2e-2 * exact.abs().mean().item()


def test_huge_pages_follow_the_fast_path_switch_and_the_users_setting(monkeypatch):
    for env, expected in [({}, "1"), ({"PDFNET_FASTPATH": "0"}, None), ({"THP_MEM_ALLOC_ENABLE": "0"}, "0")]:
        monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
        monkeypatch.delenv("PDFNET_FASTPATH", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        fp.use_huge_pages()
        assert os.environ.get("THP_MEM_ALLOC_ENABLE") == expected, env


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unknown"


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"), reason="transparent huge pages are off here")
def test_huge_pages_take_effect():
    """Switched on before torch allocates (as the entry points do), a large tensor lies on huge pages."""
    probe = (
        "import sys, torch\n"
        "from pdfnet.model.fastpath import use_huge_pages\n"
        "if sys.argv[1] == 'on': use_huge_pages()\n"
        "x = torch.ones(64 << 20, dtype=torch.uint8)\n"
        "rollup = open('/proc/self/smaps_rollup').read()\n"
        "print(int(rollup.split('AnonHugePages:')[1].split()[0]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "PDFNET_FASTPATH")}
    huge = {}
    for mode in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", probe, mode], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        huge[mode] = int(done.stdout.split()[-1])  # KiB on huge pages
    assert huge["on"] >= 32 * 1024, huge
    if _thp_mode() == "madvise":  # without the switch, nothing asks for them
        assert huge["off"] < huge["on"], huge


def test_cli_switches_huge_pages_on_first(monkeypatch, tmp_path):
    import pdfnet.cli
    from pdfnet.model import fastpath

    order = []
    monkeypatch.setattr(fastpath, "use_huge_pages", lambda: order.append("huge pages"))
    real_build = pdfnet.cli.build_parser
    monkeypatch.setattr(pdfnet.cli, "build_parser", lambda: order.append("parser") or real_build())
    assert pdfnet.cli.main(["predict", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert order[:2] == ["huge pages", "parser"]
