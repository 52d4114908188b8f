"""The benchmark scripts run end to end (tiny sizes; the real figures are in the README)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_network_benchmark_cpu(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--device", "cpu", "--size", "256"]
    command += ["--no-depth", "--no-train", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu"
    [row] = report["results"]
    assert row["job"] == "infer" and row["images_per_s"] > 0
    assert "img/s" in result.stdout


def test_predictor_alternate_benchmark(tiny_official_checkpoint):
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--device", "cpu", "--size", "256"]
    command += ["--precisions", "fp32", "bf16", "--alternate", tiny_official_checkpoint, "--repeats", "2"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    fp32, bf16 = (line for line in result.stdout.splitlines() if line.startswith("Predictor"))
    assert fp32.startswith("Predictor fp32") and len(fp32.split(" s (")[0].split()[2:]) == 2  # two timed rounds
    speedup, dprob = re.search(r"([\d.]+)x fp32, mean \|dprob\| ([\d.e+-]+)$", bf16).groups()
    assert float(speedup) > 0 and float(dprob) < 2e-2


@pytest.mark.slow
def test_network_benchmark_cpu_with_training_and_depth(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--device", "cpu", "--size", "256"]
    command += ["--train-batch", "1", "--json", str(tmp_path / "bench.json")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    jobs = [r["job"] for r in json.loads((tmp_path / "bench.json").read_text())["results"]]
    assert jobs == ["infer", "infer+depth", "train"]


def test_metrics_benchmark(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "benchmark_metrics.py"), "--images", "2", "--height", "256"]
    command += ["--width", "384", "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pattern = r"ours, (first|cached) run \(whole process\) +[\d.]+ s/image +([\d.]+)x pysodmetrics"
    ratios = re.findall(pattern, result.stdout)
    assert [run for run, _ in ratios] == ["first", "cached"] and all(float(x) > 0 for _, x in ratios)
    difference = re.search(r"largest relative difference of the 11 summary numbers: ([\d.e+-]+)", result.stdout)
    assert float(difference.group(1)) < 1e-9  # the same numbers as pysodmetrics
    assert "HCE" in result.stdout and "skeleton (first run)" in result.stdout  # where the time goes


def test_foreground_benchmark(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "benchmark_foreground.py"), "--sizes", "128", "--repeats", "1"]
    command += ["--no-pymatting", "--json", str(tmp_path / "fg.json")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {(r["composite"], r["method"]): r for r in json.loads((tmp_path / "fg.json").read_text())["rows"]}
    assert len(rows) == 4 * 5  # four composites; raw, blur fusion and three of ours
    raw, ours = rows["cat_on_magenta_128", "raw photo"], rows["cat_on_magenta_128", "ours (default)"]
    assert ours["mae"] < 0.5 * raw["mae"]
