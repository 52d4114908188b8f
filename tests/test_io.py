"""Writing files: temporaries named for their writer and removed once it is gone, folders created only for
something to write, and the records of what made each output."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pdfnet import io
from pdfnet.io import FolderLock, atomic_path, check_writable_folder, is_stale_temporary, write_image_atomic
from pdfnet.provenance import make_record, read_options, report_lines, sort_existing


def _temporary(folder, owner: str, age_s: float = 0.0):
    path = folder / f".x.png.{owner}.abcd1234.tmp"
    path.write_bytes(b"half a file")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_temporaries_name_their_writer(tmp_path):
    with atomic_path(tmp_path / "a.png") as tmp:
        assert tmp.name.startswith(f".a.png.{io._host_tag()}-{os.getpid()}.") and tmp.name.endswith(".tmp")
        assert not is_stale_temporary(tmp)  # this process is writing it


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times are read from /proc")
def test_stale_temporaries_are_those_whose_writer_is_gone(tmp_path):
    host = io._host_tag()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = _temporary(tmp_path, f"{host}-{int(gone.stdout)}")  # a killed run's, moments ago
    live = _temporary(tmp_path, f"{host}-{os.getppid()}", age_s=1)  # a running process that started earlier
    # the id of a process that started after the file was written: its writer was another, now gone
    younger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        reused = _temporary(tmp_path, f"{host}-{younger.pid}", age_s=3600)
        other_host = _temporary(tmp_path, "elsewhere-123", age_s=3600)  # can't be asked: kept for a day
        old_other_host = _temporary(tmp_path, "elsewhere-124", age_s=2 * 24 * 3600)
        unowned = tmp_path / ".x.png.abcd1234.tmp"  # an earlier version's: kept for an hour
        unowned.write_bytes(b"")
        assert [is_stale_temporary(p) for p in (dead, live, reused, other_host, old_other_host, unowned)] == [
            True,
            False,
            True,
            False,
            True,
            False,
        ]
        assert io.remove_stale_temporaries(tmp_path) == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_host, unowned))
    finally:
        younger.kill()
        younger.wait()


def test_the_first_write_in_a_folder_removes_stale_temporaries(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _temporary(tmp_path, f"{io._host_tag()}-{int(gone.stdout)}")
    write_image_atomic(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
    assert not stale.exists() and (tmp_path / "b.png").exists()


def test_a_killed_writer_leaves_a_temporary_the_next_run_removes(tmp_path):
    # kill -9 during a write: the temporary stays; the next command writing in that folder removes it
    script = (
        "import os, sys, time\n"
        "from pdfnet.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "c.png")], stdout=subprocess.PIPE, text=True
    )
    left = writer.stdout.readline().strip()
    writer.kill()
    writer.wait()
    assert os.path.exists(left)
    write_image_atomic(tmp_path / "d.png", np.zeros((4, 4), np.uint8))
    assert not os.path.exists(left)


def test_checking_a_folder_creates_nothing(tmp_path):
    assert check_writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(io.OutputError, match="not a folder"):
        check_writable_folder(tmp_path / "file" / "sub")


def test_a_lock_removes_the_folders_it_made_when_nothing_was_written(tmp_path):
    with FolderLock(tmp_path / "a" / "b", "predict"):
        assert (tmp_path / "a" / "b" / ".pdfnet.lock").exists()
    assert not (tmp_path / "a").exists()
    with FolderLock(tmp_path / "a" / "b", "predict"):
        write_image_atomic(tmp_path / "a" / "b" / "x.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "a" / "b" / "x.png").exists() and not (tmp_path / "a" / "b" / ".pdfnet.lock").exists()
    (tmp_path / "kept").mkdir()
    with FolderLock(tmp_path / "kept", "predict"):
        pass
    assert (tmp_path / "kept").is_dir()  # it was there before: never removed


def test_records_round_trip_through_png_and_compare(tmp_path):
    options = {"output": "mask", "tta": True, "input-size": 1024, "weights": "base"}
    write_image_atomic(tmp_path / "a.png", np.zeros((4, 4), np.uint8), make_record("predict", options))
    assert read_options(tmp_path / "a.png") == {"output": "mask", "tta": "on", "input-size": "1024", "weights": "base"}
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")  # no record
    (tmp_path / "c.png").write_bytes(b"damaged")
    existing = sort_existing(
        [
            (tmp_path / "a.png", options),
            (tmp_path / "a.png", {**options, "tta": False}),
            (tmp_path / "b.png", options),
            (tmp_path / "c.png", options),
            (tmp_path / "missing.png", options),
        ]
    )
    assert existing.same == [tmp_path / "a.png"] and existing.unrecorded == [tmp_path / "b.png", tmp_path / "c.png"]
    assert existing.other == {"tta=on (now off)": [tmp_path / "a.png"]}
    lines = report_lines(existing)
    assert lines == [
        f"{tmp_path}: 1 output was made with other options: tta=on (now off); kept, --overwrite redoes them",
        f"{tmp_path}: 2 outputs hold no record of the options that made them (an earlier version or another "
        "tool); kept, --overwrite redoes them",
    ]
