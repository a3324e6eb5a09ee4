"""Throughput and peak memory of an afp step (MCL + CIT) against a plain LoRA causal-LM fine-tuning step.

Same model, batch and sequence length for all: each measurement runs in its own process (clean peak memory) on
random token ids, after warm-up steps. Baselines:
  trainer  — an HF Trainer training step (LoRA, causal-LM loss on the same instruction texts, same masking)
  plain    — the same plain causal-LM step in a hand loop (model(..., labels=...), backward, AdamW)
  afp      — afp's step: one MCL forward of both sentences of every pair (stopped at the pooling layer) + CIT
  afp-cit  — afp's step with MCL off (cit only): afp minus afp-cit is what MCL costs
Prints a table and the ratio afp / baseline (time per step). Not a test: it asserts nothing.

  python bench/align_throughput.py                                   # small random XGLM on the CPU
  python bench/align_throughput.py --preset xglm-564m --batch 4 --seq 512 --device cuda --steps 50
  python bench/align_throughput.py --preset xglm-564m --batch 4 --seq 512 --device cuda --steps 50 --full
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODES = ("trainer", "plain", "afp-cit", "afp")
PRESETS = {
    # xglm-564M's published config (facebook/xglm-564M config.json), built at random: nothing is downloaded
    "xglm-564m": {"model_type": "xglm", "d_model": 1024, "ffn_dim": 4096, "num_layers": 24, "attention_heads": 16,
                  "max_position_embeddings": 2048, "vocab_size": 256008},
    "xglm-small": {"model_type": "xglm", "d_model": 256, "ffn_dim": 1024, "num_layers": 6, "attention_heads": 4,
                   "max_position_embeddings": 1024, "vocab_size": 16000},
}


def build(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from afp_cli.model import add_lora

    fields = dict(PRESETS[args.preset])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    # as afp align: bf16 base weights under LoRA on CUDA; fp32 master weights (bf16 autocast) for full fine-tuning
    dtype = torch.bfloat16 if args.device.startswith("cuda") and not args.full else torch.float32
    model = AutoModelForCausalLM.from_config(config).to(args.device, dtype)
    model.config.use_cache = False
    if args.full:
        return model, config.vocab_size
    return add_lora(model, r=16, alpha=32, dropout=0.05, targets=args.targets, seed=0), config.vocab_size


def synthetic_batch(args, vocab_size):
    """CIT texts of ``seq`` tokens (first half prompt, masked) and translation pairs of ``seq // 4`` tokens each."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab_size, (args.batch, args.seq), generator=generator)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    sentences = torch.randint(10, vocab_size, (2 * args.batch, args.seq // 4), generator=generator)
    return ids, labels, sentences


def measure(args) -> dict:
    import torch

    from afp_cli.align.config import build_config
    from afp_cli.data.batches import Batch
    from afp_cli.align.train import loss_step

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    model, vocab_size = build(args)
    model.train()
    ids, labels, sentences = synthetic_batch(args, vocab_size)
    ids, labels, sentences = ids.to(args.device), labels.to(args.device), sentences.to(args.device)
    ones = torch.ones_like(ids)
    cuda = args.device.startswith("cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))
    tokens_per_step = ids.numel() + (sentences.numel() if args.mode == "afp" else 0)
    mcl_weight = 0.0 if args.mode == "afp-cit" else 1.0

    if args.mode == "trainer":
        return measure_trainer(args, model, ids, labels, tokens_per_step)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    config = build_config({"model": {"name_or_path": "bench"}, "data": {"train_file": "bench"},
                           "train": {"batch_size": args.batch}, "mcl": {"weight": mcl_weight}})
    batch = Batch(sentences, torch.ones_like(sentences), 2, ids, ones, labels)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            if args.mode.startswith("afp"):
                loss = loss_step(model, batch, config).total
            else:
                loss = model(input_ids=ids, attention_mask=ones, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return timed(step, args, cuda, tokens_per_step)


def measure_trainer(args, model, ids, labels, tokens_per_step) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": ids[i].cpu(), "labels": labels[i].cpu(), "attention_mask": torch.ones_like(ids[i]).cpu()}
            for i in range(ids.shape[0])]
    dataset = rows * (args.steps + args.warmup + 1)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    training_args = TrainingArguments(
        output_dir=os.path.join("/tmp", "afp-bench-trainer"), per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup, learning_rate=1e-4, max_grad_norm=1.0, logging_strategy="no",
        save_strategy="no", report_to=[], bf16=args.device.startswith("cuda"), use_cpu=args.device == "cpu",
        dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, callbacks=[Clock()])
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = sum(times[args.warmup:]) / len(times[args.warmup:])
    return summary(args, seconds, tokens_per_step)


def timed(step, args, cuda, tokens_per_step) -> dict:
    import torch

    for _ in range(args.warmup):
        step()
    if args.profile:  # where the time goes: the operators that take most GPU (or CPU) time, on stderr
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(3):
                step()
            if cuda:
                torch.cuda.synchronize()
        sort_by = "cuda_time_total" if cuda else "cpu_time_total"
        print(f"--- profile of 3 {args.mode} steps", file=sys.stderr)
        print(profiler.key_averages().table(sort_by=sort_by, row_limit=args.profile), file=sys.stderr)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return summary(args, (time.perf_counter() - start) / args.steps, tokens_per_step)


def summary(args, seconds_per_step: float, tokens_per_step: int) -> dict:
    import torch

    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        peak_kind = "GPU max allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        peak_kind = "process max RSS"
    return {"mode": args.mode, "steps_per_s": 1 / seconds_per_step, "seconds_per_step": seconds_per_step,
            "tokens_per_s": tokens_per_step / seconds_per_step, "peak_gib": peak, "peak_kind": peak_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="xglm-small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--targets", default="attention", help="LoRA targets preset (lora.targets); the results "
                        "recorded before afp 0.2 adapted the attention projections")
    parser.add_argument("--full", action="store_true", help="full fine-tuning (every weight, fp32 master "
                        "weights under bf16 autocast on CUDA) instead of LoRA")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="which steps to measure (afp and plain at least, for the ratio)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also profile 3 steps of each mode and print the top ROWS operators (stderr)")
    parser.add_argument("--mode", choices=list(MODES), help="measure one mode (internal)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return

    results = {}
    passed_on = [f"--{key}" if value is True else f"--{key}={value}" for key, value in vars(args).items()
                 if key not in {"mode", "modes"} and value is not None and value is not False]
    for mode in args.modes:
        command = [sys.executable, __file__, "--mode", mode] + passed_on
        finished = subprocess.run(command, check=True, capture_output=True, text=True)
        output = finished.stdout
        if args.profile:
            print(finished.stderr[finished.stderr.find("--- profile"):])
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}; "
          f"preset {args.preset}, batch {args.batch}, seq {args.seq} (MCL sentences {args.seq // 4} tokens), "
          f"{args.steps} timed steps after {args.warmup} warm-up; "
          f"{'full fine-tuning' if args.full else f'LoRA targets {args.targets}'}")
    print(f"{'step':<10}{'steps/s':>10}{'tokens/s':>12}{'peak GiB':>10}  peak measured as")
    for mode, result in results.items():
        print(f"{mode:<10}{result['steps_per_s']:>10.3f}{result['tokens_per_s']:>12.0f}{result['peak_gib']:>10.2f}"
              f"  {result['peak_kind']}")
    for baseline in ("trainer", "plain"):
        if "afp" in results and baseline in results:
            ratio = results["afp"]["seconds_per_step"] / results[baseline]["seconds_per_step"]
            print(f"afp step time / {baseline} step time: {ratio:.2f}x (target <= 1.15x)")
    if "afp" in results and "afp-cit" in results:
        mcl_share = 1 - results["afp-cit"]["seconds_per_step"] / results["afp"]["seconds_per_step"]
        print(f"MCL share of the afp step: {100 * mcl_share:.0f} %")


if __name__ == "__main__":
    main()
