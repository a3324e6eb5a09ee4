"""The GPU benchmark scripts still run, checked on the CPU: a lent GPU gives about 15 minutes, which a broken script
would waste (bench/gpu_checks.sh runs them there). What they measure is in bench/RESULTS.md, not asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bench(*args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    finished = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def test_align_engines_reloads_runs_and_two_identical_cpu_runs_give_identical_logits(tmp_path):
    output = bench(
        "bench/align_engines.py",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--rows",
        "plain-lora",
        "plain-lora-again",
        "--out",
        str(tmp_path),
    )
    rows = {line.split()[0]: line.split() for line in output.splitlines() if line.startswith("plain-lora")}
    assert rows["plain-lora"][1] == rows["plain-lora-again"][1] == "yes"
    assert rows["plain-lora-again"][-1] == "0.0000"  # the same seed on the CPU: the same adapter, the same logits
    untrained = next(line for line in output.splitlines() if line.startswith("untrained base"))
    assert float(untrained.split()[-1]) > 0.01  # two steps moved the logits: the comparison can see a difference
    assert (tmp_path / "plain-lora" / "adapter_model.safetensors").is_file()


def test_align_throughput_full_fine_tuning_prints_the_ratio():
    output = bench("bench/align_throughput.py", "--steps", "1", "--warmup", "1", "--full", "--modes", "plain", "afp")
    assert "full fine-tuning" in output
    assert re.search(r"afp step time / plain step time: \d+\.\d\dx", output), output


def test_the_gpu_checks_script_parses():
    finished = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_checks.sh")], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
