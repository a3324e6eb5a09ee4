"""`afp align` under each engine on one GPU: plain, FSDP and DeepSpeed ZeRO-2, LoRA and full fine-tuning.

The engines are the accelerate configs shipped in recipes/accelerate/, launched as users launch them
(``accelerate launch --config_file … -m afp_cli align``, ``--num_processes`` set by ``--processes``), on one small
random model (xglm architecture) and the shipped Tatoeba sample. For each run it reports:

- whether the run finished, its tokens/s and peak GPU memory (metrics.jsonl), held-out retrieval and CIT loss;
- max |Δ logits| against the plain run with the same mode: the saved weights loaded the way users load them
  (``PeftModel.from_pretrained`` on the saved base model; ``AutoModelForCausalLM.from_pretrained`` for full
  fine-tuning), on fixed sentences. Two reference rows give the scale: a second plain run (the GPU's own
  run-to-run noise) and the untrained base (how far training moved the logits);
- with ``resume``: the run stopped half-way (``--stop-after``) and continued with ``--resume`` under the same
  engine, against the uninterrupted run: max |Δ| of the saved weights.

Prints one table line per run as it ends; asserts nothing (a failed run prints its last lines and the
table goes on).

  python bench/align_engines.py                       # CUDA GPU; the DeepSpeed rows need `pip install deepspeed`
  python bench/align_engines.py --rows plain-lora fsdp-lora
  python bench/align_engines.py --processes 8             # sharded engines on 8 GPUs (global batch 16 = 8 × 2)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"
CONFIGS = ROOT / "recipes" / "accelerate"
ARCHITECTURE = {
    "model_type": "xglm",
    "d_model": 256,
    "ffn_dim": 1024,
    "num_layers": 6,
    "attention_heads": 4,
    "max_position_embeddings": 1024,
}
ENGINES = {
    "plain": None,
    "fsdp": ["--config_file", str(CONFIGS / "fsdp.yaml")],
    "deepspeed": ["--config_file", str(CONFIGS / "deepspeed-zero2.yaml"), "--offload_optimizer_device", "none"],
    "deepspeed-offload": ["--config_file", str(CONFIGS / "deepspeed-zero2.yaml")],  # as shipped: optimizer on CPU
}


@dataclass(frozen=True)
class Row:
    name: str
    engine: str
    full: bool
    resume: bool = False


# the plain run of each mode first (the reference), the sharded engines next, the noise reference last
ROWS = [
    Row("plain-lora", "plain", False),
    Row("fsdp-lora", "fsdp", False, resume=True),
    Row("deepspeed-lora", "deepspeed", False, resume=True),
    Row("plain-full", "plain", True),
    Row("fsdp-full", "fsdp", True, resume=True),
    Row("deepspeed-full", "deepspeed", True),
    Row("deepspeed-offload-full", "deepspeed-offload", True, resume=True),
    Row("plain-lora-again", "plain", False),
]


def write_recipe(folder: Path, args, full: bool) -> Path:
    recipe = {
        "model": {"architecture": ARCHITECTURE, "tokenizer_vocab_size": 2000},
        "lora": {"enabled": not full, "r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train_file": str(DEMO_DATA), "held_out": 64, "max_length": 64},
        "train": {
            "max_steps": args.steps,
            "batch_size": args.batch,
            "lr": 1e-3 if not full else 1e-4,
            "log_every": max(1, args.steps // 4),
            "eval_every": 0,
            "save_every": 0,
            "seed": 0,
            "device": args.device,
        },
    }
    path = folder / f"recipe-{'full' if full else 'lora'}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def launch(
    row: Row, recipe: Path, output_dir: Path, extra: list[str], log: Path, processes: int = 1
) -> tuple[bool, float]:
    engine = ENGINES[row.engine]
    launcher = (
        [sys.executable]
        if engine is None
        else [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *engine,
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
        ]
    )
    command = [*launcher, "-m", "afp_cli", "align", str(recipe), f"output_dir={output_dir}", *extra]
    started = time.perf_counter()
    with log.open("a") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        finished = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    return finished.returncode == 0, time.perf_counter() - started


def saved_weights(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    names = ["adapter_model.safetensors", "model.safetensors"]
    for name in names:
        if (output_dir / name).exists():
            return load_file(output_dir / name)
    raise FileNotFoundError(f"no {' or '.join(names)} in {output_dir}")


def max_difference(left: dict, right: dict) -> float:
    if left.keys() != right.keys():
        return float("nan")
    return max(float((left[key].float() - right[key].float()).abs().max()) for key in left)


def load_for_logits(output_dir: Path, full: bool, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    if full:
        return AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32).to(device).eval()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(output_dir / "base_model", dtype=torch.float32).to(device)
    return PeftModel.from_pretrained(base, output_dir).eval()


def logits_of(model, token_ids):
    import torch

    with torch.no_grad():
        return model(input_ids=token_ids).logits.float()


def probe_ids(reference_dir: Path, device: str):
    """Fixed sentences of the demo data, tokenised by the run's tokenizer, as one padded-free batch."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    lines = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:8]
    texts = [json.loads(line)["sent0"] for line in lines]
    ids = [tokenizer(text)["input_ids"][:12] for text in texts]
    width = min(len(row) for row in ids)
    return torch.tensor([row[:width] for row in ids]).to(device)


def metrics_of(output_dir: Path) -> dict:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((output_dir / "summary.json").read_text())
    timed = records[1:] or records
    return {
        "tokens_per_s": sum(record["tokens_per_s"] for record in timed) / len(timed),
        "gpu_peak_gib": max(record.get("gpu_peak_gib", float("nan")) for record in records),
        "retrieval": (
            summary["held_out_before"].get("retrieval_top1"),
            summary["held_out_after"].get("retrieval_top1"),
        ),
        "cit_loss": summary["held_out_after"].get("cit_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=[row.name for row in ROWS], default=[row.name for row in ROWS])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes (GPUs) per sharded engine; the plain "
        "rows run one process on the same global batch, so the rows stay comparable",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda", help="cuda; cpu runs only the plain rows (a check of this script)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-engines"), help="run folders and logs")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("align_engines needs a CUDA GPU (FSDP and DeepSpeed run on GPUs only)")
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"# {where}, torch {torch.__version__}; xglm d_model 256 × 6 layers (random), "
        f"global batch {args.batch}, {args.steps} steps, {args.processes} process(es) per sharded engine"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    recipes = {full: write_recipe(args.out, args, full) for full in (False, True)}
    references: dict[bool, tuple] = {}  # mode (full?) → (plain run's folder, probe ids, its logits)
    print(HEADER, flush=True)
    for row in (row for row in ROWS if row.name in args.rows):
        output_dir, log = args.out / row.name, args.out / f"{row.name}.log"
        processes = 1 if row.engine == "plain" else args.processes
        ok, seconds = launch(row, recipes[row.full], output_dir, ["--overwrite"], log, processes)
        result = {"ok": ok, "seconds": seconds}
        if ok:
            result.update(metrics_of(output_dir))
            if row.engine == "plain" and row.full not in references:
                probe = probe_ids(output_dir, args.device)
                references[row.full] = (
                    output_dir,
                    probe,
                    logits_of(load_for_logits(output_dir, row.full, args.device), probe),
                )
                if not row.full:
                    print_row(
                        "untrained base (LoRA mode)",
                        {
                            "ok": True,
                            "logits_delta": untrained_delta(output_dir, probe, references[row.full][2], args.device),
                        },
                    )
            if row.full in references:
                _, probe, expected = references[row.full]
                got = logits_of(load_for_logits(output_dir, row.full, args.device), probe)
                result["logits_delta"] = float((got - expected).abs().max())
            if row.resume:
                halfway = args.out / f"{row.name}-resumed"
                ok_stop, _ = launch(
                    row, recipes[row.full], halfway, ["--overwrite", f"--stop-after={args.steps // 2}"], log, processes
                )
                ok_resume = ok_stop and launch(row, recipes[row.full], halfway, ["--resume"], log, processes)[0]
                result["resume_delta"] = (
                    max_difference(saved_weights(output_dir), saved_weights(halfway)) if ok_resume else "failed"
                )
        print_row(row.name, result)
        if not ok:
            print(
                f"  last lines of {log}:\n    " + "\n    ".join(log.read_text(errors="replace").splitlines()[-25:]),
                flush=True,
            )


HEADER = (
    f"{'run':<28}{'ok':>4}{'s':>6}{'tok/s':>9}{'GPU GiB':>9}{'retrieval':>15}{'CIT':>7}"
    f"{'|Δ logits| vs plain':>21}{'resume |Δ w|':>14}"
)


def untrained_delta(reference_dir: Path, probe, expected, device: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(reference_dir / "base_model", dtype=torch.float32).to(device)
    return float((logits_of(base.eval(), probe) - expected).abs().max())


def print_row(name: str, result: dict) -> None:
    if "seconds" not in result:  # a reference line
        print(f"{name:<28}{'':>4}{'':>6}{'':>9}{'':>9}{'':>15}{'':>7}{result['logits_delta']:>21.4f}", flush=True)
        return
    if not result["ok"]:
        print(f"{name:<28}{'no':>4}{result['seconds']:>6.0f}", flush=True)
        return
    before, after = result["retrieval"]
    resume = result.get("resume_delta", "")
    resume = f"{resume:.2e}" if isinstance(resume, float) else resume
    print(
        f"{name:<28}{'yes':>4}{result['seconds']:>6.0f}{result['tokens_per_s']:>9.0f}"
        f"{result['gpu_peak_gib']:>9.2f}{f'{before:.3f}→{after:.3f}':>15}{result['cit_loss']:>7.3f}"
        f"{result.get('logits_delta', float('nan')):>21.4f}{resume:>14}",
        flush=True,
    )


if __name__ == "__main__":
    main()
