"""Every job under torchrun (two gloo processes on the CPU) gives what one process gives, each output written
once; training resumes within an epoch to the weights of an uninterrupted run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_FOLDERS, make_toy_dis5k
from PIL import Image

from pdfnet.config import ConfigError, load_config
from pdfnet.data.dataset import EpochSampler
from pdfnet.distributed import Runtime, all_ranks, everywhere, on_main, shard
from pdfnet.errors import CheckpointError
from pdfnet.training.engine import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(*command: str, processes: int = 1) -> subprocess.CompletedProcess:
    """``python COMMAND`` in one process, or under ``torchrun --standalone --nproc_per_node N``."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run([*launcher, *command], capture_output=True, text=True, cwd=ROOT, env=ENV)


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))}


def assert_same_images(one: Path, two: Path) -> None:
    a, b = pngs(one), pngs(two)
    assert a and list(a) == list(b)
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1


# ------------------------------------------------------------------------------------------- the helpers


def test_shards_are_disjoint_and_complete():
    items = list(range(11))
    shards = [shard(items, Runtime(torch.device("cpu"), rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == items and sum(map(len, shards)) == len(items)


def test_one_process_helpers_are_plain_calls():
    rt = Runtime(torch.device("cpu"))
    assert all_ranks(lambda: 3, rt) == [3] and on_main(lambda: "x", rt) == "x"

    def fails():
        raise CheckpointError("bad.pth is empty")

    with pytest.raises(CheckpointError, match="bad.pth"):
        all_ranks(fails, rt)
    with pytest.raises(CheckpointError, match="bad.pth"):
        everywhere(fails, rt)
    assert everywhere(lambda: [1, 2], rt) == [1, 2]


def test_every_process_gets_training_samples():
    # fewer samples than processes (a small set, or half of it on a mining epoch): padding wraps around as often
    # as needed, so that no process skips DDP's gradient exchange and leaves the others waiting
    for size, world in [(1, 4), (3, 8), (5, 2), (7, 3), (8, 4)]:
        shards = [list(EpochSampler(size, world_size=world, rank=r)) for r in range(world)]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) >= 1
        assert {i for s in shards for _, i in s} == set(range(size))


def test_more_processes_than_gpus_is_found_by_every_process(monkeypatch):
    # each process of the node finds it (rank 0 too, which has a GPU), before any joins the group, so that rank 0
    # reports it in one line instead of waiting for the others
    from pdfnet.distributed import LaunchError, setup_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for rank in ("0", "1"):
        env = {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": "2"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(LaunchError, match="2 processes on this node but 1 GPU"):
            setup_runtime(None)
    with pytest.raises(LaunchError, match="not a device: 'bogus'"):
        setup_runtime("bogus")


def one_error_line(result: subprocess.CompletedProcess, *names: str) -> None:
    """Every process stopped, rank 0 said why in one line, and none printed a traceback of ours."""
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, result.stderr
    # torchrun prints its own traceback (ChildFailedError) when a process fails; none may run through our code
    assert not re.search(rf'File "{re.escape(str(ROOT))}/(pdfnet/|[^/"]+\.py")', result.stderr), result.stderr
    for name in names:
        assert name in ours[0], ours[0]


# ------------------------------------------------------------------------------------ jobs under torchrun


def test_predict_under_torchrun(tmp_path, tiny_official_checkpoint):
    images, depths = tmp_path / "in", tmp_path / "depth"
    images.mkdir(), depths.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        size = (80 + 8 * i, 120 - 8 * i)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(depths / f"p{i}.png")
    (images / "broken.png").write_bytes(b"not a png")
    common = ["-m", "pdfnet", "predict", str(images), "--weights", tiny_official_checkpoint, "--depth", str(depths)]
    common += ["--input-size", "256", "--device", "cpu", "--format", "both"]
    one = run(*common, "--out", str(tmp_path / "one"))
    two = run(*common, "--out", str(tmp_path / "two"), processes=2)
    for result in (one, two):  # the broken file is named, the rest written, exit status 1
        assert result.returncode == 1 and "broken.png" in result.stderr
    assert "wrote 5 result(s)" in one.stdout
    assert two.stdout.count("wrote 5 result(s)") == 1 and "by 2 processes" in two.stdout  # rank 0 sums up
    assert len(list((tmp_path / "two").glob("*.png"))) == 10
    assert_same_images(tmp_path / "one", tmp_path / "two")
    # a mistake found on every process is reported once, in one line
    bad = run(
        *common[:4], "--weights", str(tmp_path / "none.pth"), *common[6:], "--out", str(tmp_path / "x"), processes=2
    )
    assert bad.returncode != 0 and bad.stderr.count("error: no checkpoint at") == 1
    one_error_line(run(*common[:-6], "--device", "bogus", "--out", str(tmp_path / "x"), processes=2), "bogus")


def test_a_process_that_dies_leaves_no_lock_and_no_partial_file(tmp_path, tiny_official_checkpoint):
    # process 1 dies (out of memory, say) while process 0 is inside an atomic write: torchrun stops process 0
    # with SIGTERM, which must unwind it, removing the temporary file and releasing the folder's lock
    images, depths = tmp_path / "in", tmp_path / "depth"
    images.mkdir(), depths.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 48, 3), 40 * i, dtype=np.uint8)).save(images / f"p{i}.png")
        Image.fromarray(np.full((32, 48), 60 * i, dtype=np.uint8)).save(depths / f"p{i}.png")
    dying = tmp_path / "dying.py"
    dying.write_text(
        "import os, sys, time\n"
        "import pdfnet.commands.predict as predict\n"
        "from pdfnet.cli import main\n"
        "from pdfnet.io import atomic_path\n"
        "def write(path, *args, **kwargs):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        time.sleep(2)\n"
        "        os._exit(3)\n"
        "    with atomic_path(path) as tmp:\n"
        "        tmp.write_bytes(b'partial')\n"
        "        time.sleep(60)\n"
        "predict.write_image_atomic = write\n"
        "sys.exit(main(['predict', *sys.argv[1:]]))\n"
    )
    out = tmp_path / "out"
    args = [str(images), "--weights", tiny_official_checkpoint, "--depth", str(depths), "--input-size", "256"]
    result = run(str(dying), *args, "--device", "cpu", "--out", str(out), processes=2)
    assert result.returncode != 0
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())  # nothing was finished: no folder


def test_depth_and_test_under_torchrun(tmp_path, tiny_official_checkpoint, tiny_depth_model):
    splits = ["DIS-TE1", "DIS-TE2"]
    root = make_toy_dis5k(tmp_path / "data", splits=splits, n=3)
    depth = ["depth_prep/prepare_depth.py", "--data-root", str(root), "--splits", *splits, "--device", "cpu"]
    depth += ["--model", tiny_depth_model]
    one = run(*depth, "--out-name", "depth_one")
    two = run(*depth, "--out-name", "depth_large", processes=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert two.stdout.count("wrote 6 depth map(s) (2 processes)") == 1
    for split in splits:
        assert_same_images(root / split / "depth_one", root / split / "depth_large")

    test = ["test.py", "--checkpoint", tiny_official_checkpoint, "--data-root", str(root), "--splits", *splits]
    test += ["--input-size", "256", "--device", "cpu", "--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    one = run(*test, "--out", str(tmp_path / "one"))
    two = run(*test, "--out", str(tmp_path / "two"), processes=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    for split in splits:
        assert_same_images(tmp_path / "one" / "preds" / split, tmp_path / "two" / "preds" / split)
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "two"))
    assert list(a) == list(b) == splits
    assert all(abs(a[s][k] - b[s][k]) <= 1e-4 for s in splits for k in a[s])
    assert two.stdout.count("| DIS-TE1 |") == 1  # one table, from rank 0
    # a mask that cannot be read is found by rank 0 while scoring: every process stops with it
    mask = sorted((root / "DIS-TE2" / "masks").iterdir())[0]
    mask.write_bytes(b"not a png")
    broken = run(*test, "--out", str(tmp_path / "three"), processes=2)
    one_error_line(broken, mask.name)
    assert "<NO_OTHER_FAILURES>" not in broken.stderr  # torchrun saw both processes fail


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_the_process_group_is_gone_before_the_interpreter_ends(tmp_path, tiny_depth_model):
    # transformers builds a model with torch.distributed.nn imported: had that bound the world group as a default
    # argument, the group's worker threads would outlive destroy_process_group, and one still releasing the last
    # collective's tensors as the interpreter shut down aborted the process after its work was done (exit -6)
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "from pdfnet.data.depth import DepthEstimator\n"
        "from pdfnet.distributed import all_ranks, process_group\n"
        "with process_group('cpu') as rt:\n"
        "    DepthEstimator(sys.argv[1])\n"
        "    all_ranks(lambda: rt.rank, rt)\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "gloo = sorted(n for n in names if 'gloo' in n)\n"
        "open(f'{sys.argv[2]}/threads{rt.rank}.txt', 'w').write(repr(gloo))\n"
    )
    # one file per rank: two processes printing at once interleave their lines on the shared stdout
    result = run(str(script), tiny_depth_model, str(tmp_path), processes=2)
    assert result.returncode == 0, result.stderr
    left = {p.name: p.read_text() for p in sorted(tmp_path.glob("threads*.txt"))}
    assert left == {"threads0.txt": "[]", "threads1.txt": "[]"}


def test_training_mistakes_under_torchrun_stop_every_process_in_one_line(toy, tmp_path):
    common = ["train.py", "--config", str(TINY), f"data.root={toy}", "train.validate=false"]
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.jsonl").write_text("")
    result = run(*common, f"output_dir={used}", processes=2)
    one_error_line(result, "already holds a run")
    assert "<NO_OTHER_FAILURES>" not in result.stderr
    one_error_line(run(*common, f"output_dir={tmp_path / 'b'}", "data.input_size=100", processes=2), "data.input_size")


# ------------------------------------------------------------------------------- resuming within an epoch


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_dis5k(tmp_path_factory.mktemp("dis5k"), n=4, depths=DEPTH_FOLDERS)


def test_resume_within_an_epoch_is_exact(toy, tmp_path, monkeypatch):
    import pdfnet.training.checkpointing as ckpt

    # hard-sample mining: the second epoch trains on the hardest half of the first, partly from the checkpoint
    common = [f"data.root={toy}", "train.epochs=2", "train.batch_size=1", "train.hard_mining=true"]
    common += ["train.validate=false", "model.dropout=0.2"]
    straight = train(load_config(TINY, [*common, f"output_dir={tmp_path / 'a'}"]))
    real = ckpt.save_checkpoint

    def killed_after_step_2(state, path):
        real(state, path)
        if state.get("step") == 2:
            raise KeyboardInterrupt  # preempted right after the checkpoint of step 2 of epoch 1

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_after_step_2)
    cfg = load_config(TINY, [*common, f"output_dir={tmp_path / 'b'}", "train.checkpoint_every=1"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(ckpt, "save_checkpoint", real)
    last = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"]) == (0, 2)
    resumed = train(cfg, resume="auto")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["train"] for r in straight] == [r["train"] for r in resumed]
    assert [r["samples"] for r in resumed] == [4, 2]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]


def test_checkpoint_every_falls_between_updates_and_shares_need_their_processes():
    with pytest.raises(ConfigError, match="train.checkpoint_every: expected a multiple of train.accumulation"):
        load_config(TINY, ["train.accumulation=2", "train.checkpoint_every=3"])
    from pdfnet.training.engine import _progress_within_epoch

    within = {"step": 3, "world_size": 2, "epoch_totals": [{}, {}], "epoch_sample_losses": {}}
    with pytest.raises(ConfigError, match="written within an epoch by 2 process"):
        _progress_within_epoch(within, Path("last.pt"), Runtime(torch.device("cpu")))
    assert _progress_within_epoch({"step": 0}, None, Runtime(torch.device("cpu"))).step == 0


@pytest.mark.slow
def test_resume_within_an_epoch_under_torchrun(toy, tmp_path):
    # a run preempted after step 1 of 2 per process, resumed by two processes, ends where two straight ones do
    common = ["--config", str(TINY), f"data.root={toy}", "train.epochs=1", "train.batch_size=1"]
    common += ["train.validate=false", "model.variant=release"]
    straight = run("train.py", *common, f"output_dir={tmp_path / 'a'}", processes=2)
    assert straight.returncode == 0, straight.stderr
    preempted = tmp_path / "preempted.py"
    preempted.write_text(
        "import sys\n"
        "import pdfnet.training.checkpointing as ckpt\n"
        "from pdfnet.cli import main\n"
        "real = ckpt.save_checkpoint\n"
        "def save(state, path):\n"
        "    real(state, path)\n"
        "    if state.get('step') == 1:\n"
        "        sys.exit(9)\n"
        "ckpt.save_checkpoint = save\n"
        "sys.exit(main(['train', *sys.argv[1:]]))\n"
    )
    cut = run(str(preempted), *common, f"output_dir={tmp_path / 'b'}", "train.checkpoint_every=1", processes=2)
    assert cut.returncode != 0
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 1
    resumed = run("train.py", f"output_dir={tmp_path / 'b'}", "--resume", "auto", processes=2)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
