"""Throughput and peak memory of `afp align` on 1 and on N processes, same global batch (strong scaling).

Runs the real command on a random model built from a preset architecture and the shipped Tatoeba sample: plain
``python -m afp_cli align`` for 1 process, ``torchrun --standalone --nproc-per-node N -m afp_cli align`` for N
(DDP; gloo on CPU, NCCL on GPUs). Both see the same examples in the same steps (train.batch_size is the global
batch), so the ratio is the speed-up of the same training. Throughput: steps/s and tokens/s from metrics.jsonl
after the first logging window (start-up and warm-up excluded; the same examples in the same steps, so the ratio of
tokens/s is the ratio of steps/s). Peak memory: the largest max RSS of any process so far (host memory; on GPUs it
does not show GPU memory). Prints a table and the ratio; asserts nothing.

  python bench/align_scaling.py                                  # CPU: 1 vs 2 processes, 1 torch thread each
  python bench/align_scaling.py --preset xglm-564m --batch 8 --seq 512 --device cuda --processes 1 2
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"
PRESETS = {
    # the demo's shape (recipes/tiny-demo.yaml): 4 layers, hidden 128
    "tiny-llama": {
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
    },
    "xglm-small": {
        "model_type": "xglm",
        "d_model": 256,
        "ffn_dim": 1024,
        "num_layers": 6,
        "attention_heads": 4,
        "max_position_embeddings": 1024,
    },
    # xglm-564M's published config (facebook/xglm-564M config.json), built at random: nothing is downloaded
    "xglm-564m": {
        "model_type": "xglm",
        "d_model": 1024,
        "ffn_dim": 4096,
        "num_layers": 24,
        "attention_heads": 16,
        "max_position_embeddings": 2048,
    },
}


def write_recipe(folder: Path, args) -> Path:
    recipe = {
        "model": {"architecture": PRESETS[args.preset], "tokenizer_vocab_size": args.vocab},
        "lora": {"enabled": not args.full, "r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train_file": str(DEMO_DATA), "held_out": 16, "max_length": args.seq},
        "train": {
            "max_steps": args.steps,
            "batch_size": args.batch,
            "lr": 1e-3,
            "log_every": args.log_every,
            "eval_every": 0,
            "save_every": 0,
            "seed": 0,
            "device": args.device,
            "cpu_threads": 1,
        },
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def measure(processes: int, recipe: Path, folder: Path) -> dict:
    """One run in fresh processes; returns tokens/s after the first logging window and the peak memory."""
    output_dir = folder / f"run-{processes}"
    launcher = (
        [sys.executable]
        if processes == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    )
    command = [*launcher, "-m", "afp_cli", "align", str(recipe), f"output_dir={output_dir}"]
    # a fresh wrapper per run: its children's ru_maxrss is the largest max RSS of this run's processes (KiB)
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    peak_rss = int(finished.stderr.strip().splitlines()[-1])
    timed = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()][1:]
    # the same examples in the same steps whatever the process count: the tokens/s ratio is the steps/s ratio
    return {
        "processes": processes,
        "tokens_per_s": sum(record["tokens_per_s"] for record in timed) / len(timed),
        "peak_gib": peak_rss / 2**20,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny-llama")
    parser.add_argument("--batch", type=int, default=16, help="global batch (train.batch_size)")
    parser.add_argument("--seq", type=int, default=64, help="data.max_length")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--vocab", type=int, default=2000, help="tokenizer trained in-process")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import torch

    print(
        f"# {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, preset {args.preset}, "
        f"global batch {args.batch}, max_length {args.seq}, {'full' if args.full else 'LoRA'}, {args.device}"
    )
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        recipe = write_recipe(folder, args)
        for processes in args.processes:
            results.append(measure(processes, recipe, folder))
    print(f"{'processes':>9}  {'batch per process':>17}  {'tokens/s':>9}  {'vs 1':>5}  {'peak GiB':>8}  {'wall s':>6}")
    for result in results:
        print(
            f"{result['processes']:>9}  {args.batch // result['processes']:>17}  {result['tokens_per_s']:>9.0f}  "
            f"{result['tokens_per_s'] / results[0]['tokens_per_s']:>4.2f}x  {result['peak_gib']:>8.2f}  "
            f"{result['wall_s']:>6.0f}"
        )


if __name__ == "__main__":
    main()
