"""Wall time of `afp evaluate` on 1 process against N processes (torchrun), the same items, the same comparison.

Runs the product's command twice, one after the other: ``python -m afp_cli evaluate ...`` and ``torchrun
--standalone --nproc-per-node N -m afp_cli evaluate ...``, each process with one torch thread (OMP_NUM_THREADS=1)
on the CPU, or each on its own GPU with ``--device cuda``. Prints both wall times (start-up and model loading
included: what a user waits for), their ratio, each process's share of the requests, and whether the two
comparison.json files are equal apart from the run's process fields. Not a test: it asserts nothing.

  python bench/eval_parallel.py --model ~/.cache/afp/models/smollm2-135m-instruct \
      --tasks afp_xcopa_zh_demo_native,afp_pawsx_zh --num-fewshot 0 --limit 10 --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], environment: dict[str, str]) -> float:
    start = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"failed ({finished.returncode}): {' '.join(command)}\n{finished.stderr[-3000:]}")
    return seconds


def comparable(output: Path) -> dict:
    payload = json.loads((output / "comparison.json").read_text(encoding="utf-8"))
    run = {key: value for key, value in payload["run"].items() if key not in ("processes", "requests_per_process")}
    return {**payload, "run": {**run, "output_dir": None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", action="append", default=[])
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--num-fewshot", default="0")
    parser.add_argument("--limit", default="10")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", default="1")
    arguments = parser.parse_args()

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="eval-parallel-") as scratch:
        outputs = {count: Path(scratch) / f"p{count}" for count in (1, arguments.processes)}

        def evaluate(count: int) -> list[str]:
            return [
                "-m",
                "afp_cli",
                "evaluate",
                *("-m", arguments.model, *(item for adapter in arguments.adapter for item in ("-a", adapter))),
                *("--tasks", arguments.tasks, "--num-fewshot", arguments.num_fewshot, "--limit", arguments.limit),
                *("--data-dir", arguments.data_dir, "--device", arguments.device, "--batch-size", arguments.batch_size),
                *("-o", str(outputs[count])),
            ]

        one = timed([sys.executable, *evaluate(1)], environment)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        several = timed(
            [*launcher, "--nproc-per-node", str(arguments.processes), *evaluate(arguments.processes)], environment
        )
        run = json.loads((outputs[arguments.processes] / "comparison.json").read_text(encoding="utf-8"))["run"]
        equal = comparable(outputs[1]) == comparable(outputs[arguments.processes])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {arguments.device}")
    print(f"{arguments.tasks}, {arguments.num_fewshot}-shot, --limit {arguments.limit}, {arguments.model}")
    print(f"1 process: {one:.1f} s; {arguments.processes} processes: {several:.1f} s; ratio {one / several:.2f}x")
    print(f"requests per process: {run['requests_per_process']}; comparison.json equal: {equal}")


if __name__ == "__main__":
    main()
