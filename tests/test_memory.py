import sys

import pytest

from pdfnet.cli import main
from pdfnet.memory import keep_freed_memory, release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_takes_effect():
    assert keep_freed_memory() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_freed_memory_runs():
    big = [bytearray(1 << 20) for _ in range(64)]  # freed into glibc's heap
    del big
    assert release_freed_memory() in (True, False)  # False when nothing was left to hand back


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
