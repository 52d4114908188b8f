import sys

import pytest

from pdfnet.memory import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_takes_effect():
    assert keep_freed_memory() is True
