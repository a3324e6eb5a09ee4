"""bench/align_throughput.py with issue #24's switches still runs (a lent GPU runs it from bench/gpu_checks.sh):
a local model folder, batches of a real AFP file, afp+packing, repeats; and an architecture that mixes packed texts
is reported, not measured wrongly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"
pytestmark = pytest.mark.slow


def bench(*args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    finished = subprocess.run(
        [sys.executable, "bench/align_throughput.py", *args, "--threads", "1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by mode (not the ratio lines below it)."""
    return {
        line.split()[0]: line.split()
        for line in output.splitlines()
        if line.startswith(("plain", "afp")) and re.fullmatch(r"[\d.]+", line.split()[1])
    }


def test_a_local_model_on_real_lengths_packs_with_less_padding_and_prints_every_ratio(tiny_model_dir):
    output = bench(
        "--model",
        str(tiny_model_dir("llama")),
        "--data",
        str(DEMO_DATA),
        "--batch",
        "8",
        "--seq",
        "64",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--modes",
        "plain",
        "afp",
        "afp+packing",
    )
    table = rows(output)
    assert re.search(r"afp step time / plain step time: \d+\.\d\dx", output), output
    assert re.search(r"afp\+packing step time / plain step time: \d+\.\d\dx", output), output
    assert re.search(r"afp \s+[\d.]+\s+\([\d.]+–[\d.]+\)", output), output  # median and the spread of 2 repeats
    padding = {mode: float(table[mode][4].rstrip("%")) for mode in ("afp", "afp+packing")}
    assert padding["afp+packing"] < 0.6 * padding["afp"], output  # 11 % against 22 % with this tokenizer


def test_packing_on_an_architecture_that_mixes_packed_texts_is_reported_as_failed():
    output = bench(
        "--preset",
        "xglm-small",
        "--batch",
        "2",
        "--seq",
        "32",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--modes",
        "plain",
        "afp",
        "--packing",
    )
    assert "afp+packing" in output and "does not keep packed texts apart" in output, output
