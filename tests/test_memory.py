import os
import sys

import pytest

from pdfnet.cli import main
from pdfnet.memory import keep_freed_memory, release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_takes_effect():
    assert keep_freed_memory() is True


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_freed_memory_hands_the_kept_memory_back():
    keep_freed_memory()  # freed blocks under 32 MiB now stay with the process
    blocks = [bytearray(b"x" * (1 << 20)) for _ in range(96)]  # touched, so resident
    del blocks
    kept = _resident_mib()
    assert release_freed_memory() is True
    assert _resident_mib() < kept - 48, (kept, _resident_mib())


@pytest.mark.parametrize("command, keeps", [("predict", False), ("depth", True)])
def test_only_the_many_image_commands_keep_freed_memory(command, keeps, monkeypatch, tmp_path):
    import pdfnet.memory

    calls = []
    monkeypatch.setattr(pdfnet.memory, "keep_freed_memory", lambda: calls.append(command) or True)
    args = {
        "predict": [str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")],
        "depth": ["--data-root", str(tmp_path / "missing"), "--splits", "DIS-TR"],
    }[command]
    assert main([command, *args]) == 1  # a missing input: refused at once
    assert calls == ([command] if keeps else [])
