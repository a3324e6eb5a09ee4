"""Throughput and peak memory of an afp step (MCL + CIT) against a plain LoRA causal-LM fine-tuning step.

Same model, batches and LoRA for all: each measurement runs in its own process (clean peak memory), after warm-up
steps. Baselines:
  trainer  — an HF Trainer training step (LoRA, causal-LM loss on the same instruction texts, same masking)
  plain    — the same plain causal-LM step in a hand loop (model(..., labels=...), backward, AdamW)
  afp      — afp's step: one MCL forward of both sentences of every pair (stopped at the pooling layer) + CIT
  afp-cit  — afp's step with MCL off (cit only): afp minus afp-cit is what MCL costs
An afp mode may carry afp's speed switches: afp+packing (data.packing), afp+compile (train.compile),
afp+compile+packing; --compile / --packing add them to every afp mode.

Batches: random token ids of fixed lengths (CIT texts of --seq tokens, half prompt; sentences of --seq / 4), or,
with --data, the examples of an AFP file tokenised as `afp align` does (max_length --seq), in file order, so
lengths vary as in training. "real tok/s" counts non-padding tokens (sentences + instruction texts for afp, the
instruction texts for plain and trainer); "padding" is the share of computed positions that are padding.
With --reuse-warmup-batches the timed steps repeat the warm-up's batches (compiled modes: no compilation while
timed). With --repeats N every mode runs N times, interleaved; the table shows the median and the spread (min–max).
Prints the ratio afp / baseline (time per step). With --precision fp32 bf16 every mode is measured in both (bf16
autocast as `train.precision: bf16`; "auto" is what afp align resolves on this machine) and the line
"fp32 step time / bf16 step time: N.NNx" is printed per mode. Not a test: it asserts nothing.

  python bench/align_throughput.py                                   # small random XGLM on the CPU
  python bench/align_throughput.py --preset xglm-564m --batch 4 --seq 512 --device cuda --steps 50
  python bench/align_throughput.py --preset xglm-564m --batch 4 --seq 512 --device cuda --steps 50 --full
  python bench/align_throughput.py --model ~/.cache/afp/models/smollm2-135m-instruct --batch 16 --seq 96 \
      --data afp_cli/demo/tatoeba_en-zh.afp.jsonl --modes plain afp afp+packing afp+compile afp+compile+packing
  python bench/align_throughput.py --model ~/.cache/afp/models/smollm2-135m-instruct --batch 16 --seq 96 \
      --data afp_cli/demo/tatoeba_en-zh.afp.jsonl --modes afp --precision fp32 bf16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

MODES = ("trainer", "plain", "afp-cit", "afp")
SWITCHES = ("compile", "packing")
PRESETS = {
    # xglm-564M's published config (facebook/xglm-564M config.json), built at random: nothing is downloaded
    "xglm-564m": {
        "model_type": "xglm",
        "d_model": 1024,
        "ffn_dim": 4096,
        "num_layers": 24,
        "attention_heads": 16,
        "max_position_embeddings": 2048,
        "vocab_size": 256008,
    },
    "xglm-small": {
        "model_type": "xglm",
        "d_model": 256,
        "ffn_dim": 1024,
        "num_layers": 6,
        "attention_heads": 4,
        "max_position_embeddings": 1024,
        "vocab_size": 16000,
    },
    # SmolLM2-135M's published config (LLaMA architecture: packing works on it, not on XGLM), at random, for a
    # machine without the weights (a GPU lent without ~/.cache/afp/models)
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        "vocab_size": 49152,
    },
}


def parse_mode(mode: str) -> tuple[str, set[str]]:
    """``afp+compile+packing`` → ``("afp", {"compile", "packing"})``."""
    base, *switches = mode.split("+")
    if (
        base not in MODES
        or any(switch not in SWITCHES for switch in switches)
        or (switches and not base.startswith("afp"))
    ):
        raise argparse.ArgumentTypeError(
            f"mode {mode!r}: one of {', '.join(MODES)}, an afp mode optionally with "
            f"+{' +'.join(SWITCHES)} (e.g. afp+compile+packing)"
        )
    return base, set(switches)


def mode_name(base: str, switches: set[str]) -> str:
    return "+".join([base, *[switch for switch in SWITCHES if switch in switches]])


def build(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from afp_cli.model.loading import add_lora, resolve_dtype
    from afp_cli.model.precision import training_weights_dtype_name

    # as afp align (model.dtype auto): bf16 base weights under LoRA on CUDA; fp32 weights elsewhere and for full
    # fine-tuning (bf16 then comes from autocast)
    dtype = resolve_dtype(training_weights_dtype_name(args.device, not args.full), args.device)
    torch.manual_seed(0)
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
    else:
        fields = dict(PRESETS[args.preset])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        model = AutoModelForCausalLM.from_config(config).to(args.device, dtype)
    model.config.use_cache = False
    if args.full:
        return model
    return add_lora(model, r=16, alpha=32, dropout=0.05, targets=args.targets, seed=0)


def micro_batches(args, vocab_size: int) -> list:
    """The micro-batches every mode trains on, as afp's tokenised examples (one list per step, cycled)."""
    import torch

    from afp_cli.data.batches import TokenizedExample

    if args.data:
        return data_batches(args)
    # CIT texts of ``seq`` tokens (first half prompt, masked) and translation pairs of ``seq // 4`` tokens each
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab_size, (args.batch, args.seq), generator=generator)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    sentences = torch.randint(10, vocab_size, (2 * args.batch, args.seq // 4), generator=generator)
    examples = [
        TokenizedExample(
            [sentences[index].tolist(), sentences[args.batch + index].tolist()],
            ids[index].tolist(),
            labels[index].tolist(),
        )
        for index in range(args.batch)
    ]
    return [examples]


def data_batches(args) -> list:
    from afp_cli.data.batches import tokenize_examples
    from afp_cli.data.training_records import read_training_file

    examples = read_training_file(args.data, True, True)
    tokenizer = bench_tokenizer(args, examples)
    # --reuse-warmup-batches: only the warm-up's batches, which the timed steps then cycle through
    needed = (max(args.warmup, 1) if args.reuse_warmup_batches else args.warmup + args.steps) * args.batch
    examples = (examples * (needed // len(examples) + 1))[:needed]
    tokenized, _ = tokenize_examples(examples, tokenizer, args.seq, True, True, False, True)
    return [tokenized[start : start + args.batch] for start in range(0, needed, args.batch)]


def bench_tokenizer(args, examples):
    if args.model:
        from afp_cli.model.loading import load_tokenizer

        return load_tokenizer(args.model)
    from afp_cli.model.tiny import train_tokenizer  # a preset has no tokenizer: a BPE of its vocabulary size at most

    texts = [text for example in examples for text in (example.sent0, example.sent1, example.clm_text)]
    return train_tokenizer(texts, vocab_size=min(PRESETS[args.preset]["vocab_size"], 8000))


def measure(args) -> dict:
    import torch

    from afp_cli.align.config import build_config
    from afp_cli.align.losses import objective
    from afp_cli.data.batches import collate
    from afp_cli.model.precision import resolve_precision

    base, switches = parse_mode(args.mode)
    precision = resolve_precision(args.precision[0], args.device)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    model = build(args)
    model.train()
    batches = micro_batches(args, model.config.vocab_size)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    if "packing" in switches:
        from rich.console import Console

        from afp_cli.align.step_speed import check_packing

        if not check_packing(model, Console(file=sys.stderr)):
            raise SystemExit(f"{args.mode}: this architecture does not keep packed texts apart (see the warning)")
    if "compile" in switches:
        from afp_cli.align.step_speed import compile_blocks

        compile_blocks(model)
    collated = [
        collate(examples, pad, "packing" in switches, bucket="compile" in switches, max_width=args.seq).to(args.device)
        for examples in batches
    ]
    cuda = args.device.startswith("cuda")
    autocast = precision.autocast()
    afp = base.startswith("afp")
    if base == "afp":
        counts = [(batch.token_count, batch.position_count) for batch in collated]
    else:  # the other steps see the instruction texts only
        counts = [(instruction_tokens(batch), batch.instruction_ids.numel()) for batch in collated]

    if base == "trainer":
        return measure_trainer(args, model, collated, counts, precision.bf16) | {"precision": precision.name}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    config = build_config(
        {
            "model": {"name_or_path": "bench"},
            "data": {"train_file": "bench"},
            "train": {"batch_size": args.batch},
            "mcl": {"weight": 0.0 if base == "afp-cit" else 1.0, "pooling": args.pooling},
        }
    )

    losses: list[float] = []

    def step(index: int):
        batch = collated[index % len(collated)]
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            if afp:
                loss = objective(model, batch, config).total
            else:
                loss = model(
                    input_ids=batch.instruction_ids,
                    attention_mask=batch.instruction_mask,
                    labels=batch.instruction_labels,
                ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())

    result = timed(step, args, cuda, counts)
    # the first step's loss: the same weights and batch in every precision, so the two are directly comparable
    return result | {"precision": precision.name, "first_loss": losses[0]}


def instruction_tokens(batch) -> int:
    """Real (non-padding) tokens of the batch's instruction texts."""
    if batch.instruction_packing is not None:
        return batch.instruction_packing.token_count
    return int(batch.instruction_mask.sum())


def measure_trainer(args, model, collated, counts, bf16: bool) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    # one dataset item = one of the same padded micro-batches (Trainer's sampler may take them in another order)
    items = [
        {
            "input_ids": batch.instruction_ids.cpu(),
            "labels": batch.instruction_labels.cpu(),
            "attention_mask": batch.instruction_mask.cpu(),
        }
        for batch in collated
    ]
    dataset = (items * (args.steps + args.warmup + 1))[: args.steps + args.warmup + 1]
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
        output_dir=os.path.join("/tmp", "afp-bench-trainer"),
        per_device_train_batch_size=1,
        max_steps=args.steps + args.warmup,
        learning_rate=1e-4,
        max_grad_norm=1.0,
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        bf16=bf16,
        use_cpu=args.device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, callbacks=[Clock()], data_collator=lambda rows: rows[0]
    )
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = sum(times[args.warmup :]) / len(times[args.warmup :])
    return summary(args, seconds, counts, first_step=times[0])


def timed(step, args, cuda, counts) -> dict:
    import torch

    start, first_step = time.perf_counter(), 0.0
    for index in range(args.warmup):
        step(index)
        if index == 0:
            if cuda:
                torch.cuda.synchronize()
            first_step = time.perf_counter() - start  # with compile: the compilation
    if args.profile:  # where the time goes: the operators that take most GPU (or CPU) time, on stderr
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as profiler:
            for index in range(3):
                step(args.warmup + index)
            if cuda:
                torch.cuda.synchronize()
        sort_by = "cuda_time_total" if cuda else "cpu_time_total"
        print(f"--- profile of 3 {args.mode} steps", file=sys.stderr)
        print(profiler.key_averages().table(sort_by=sort_by, row_limit=args.profile), file=sys.stderr)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for index in range(args.steps):
        step(args.warmup + index)
    if cuda:
        torch.cuda.synchronize()
    return summary(args, (time.perf_counter() - start) / args.steps, counts, first_step)


def summary(args, seconds_per_step: float, counts: list[tuple[int, int]], first_step: float) -> dict:
    """Per-step means over the timed steps' batches (the steps cycle through ``counts``)."""
    import torch

    timed_counts = [counts[(args.warmup + index) % len(counts)] for index in range(args.steps)]
    real = sum(count for count, _ in timed_counts) / args.steps
    positions = sum(position for _, position in timed_counts) / args.steps
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        peak_kind = "GPU max allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        peak_kind = "process max RSS"
    return {
        "mode": args.mode,
        "steps_per_s": 1 / seconds_per_step,
        "seconds_per_step": seconds_per_step,
        "tokens_per_s": real / seconds_per_step,
        "padding": 1 - real / positions,
        "first_step_s": first_step,
        "peak_gib": peak,
        "peak_kind": peak_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="xglm-small")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="a local model folder (weights + tokenizer) instead of a "
        "preset, e.g. ~/.cache/afp/models/smollm2-135m-instruct",
    )
    parser.add_argument(
        "--data",
        metavar="FILE",
        help="an AFP JSONL file: batches of its examples (lengths as in training) instead of random fixed-length ones",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="CIT text length (with --data: data.max_length)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="measure every mode this many times (interleaved)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument(
        "--targets",
        default="attention",
        help="LoRA targets preset (lora.targets); the results "
        "recorded before afp 0.2 adapted the attention projections",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="full fine-tuning (every weight, fp32 master weights under bf16 autocast on CUDA) instead of LoRA",
    )
    parser.add_argument(
        "--pooling",
        default="last-1",
        help="mcl.pooling of the afp modes (MCL's pass stops at its layer, so its cost grows with the layer)",
    )
    parser.add_argument(
        "--reuse-warmup-batches",
        action="store_true",
        help="with --data: the timed steps cycle through the warm-up's batches, so a compiled step meets no new "
        "shape while timed (the steady state of a long run, once every bucket has compiled); every mode sees the "
        "same batches",
    )
    parser.add_argument("--compile", action="store_true", help="every afp mode with train.compile")
    parser.add_argument("--packing", action="store_true", help="every afp mode with data.packing")
    parser.add_argument(
        "--modes",
        nargs="+",
        type=str,
        default=list(MODES),
        help="which steps to measure (afp and plain at least, for the ratio); afp modes may add "
        "+compile and/or +packing (e.g. afp+packing)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="also profile 3 steps of each mode and print the top ROWS operators (stderr)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=("auto", "fp32", "bf16"),
        default=["auto"],
        help="train.precision of every mode, each measured in turn (fp32 bf16: both, and their step-time ratio); "
        "auto: what afp align resolves here",
    )
    parser.add_argument("--mode", help="measure one mode (internal)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return

    modes = []
    for mode in args.modes:
        try:
            base, switches = parse_mode(mode)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
        if base.startswith("afp"):
            switches |= {switch for switch in SWITCHES if getattr(args, switch)}
        if mode_name(base, switches) not in modes:
            modes.append(mode_name(base, switches))
    passed_on = [
        f"--{key.replace('_', '-')}" if value is True else f"--{key.replace('_', '-')}={value}"
        for key, value in vars(args).items()
        if key not in {"mode", "modes", "compile", "packing", "repeats", "precision"}
        and value is not None
        and value is not False
    ]
    precisions = list(dict.fromkeys(args.precision))
    # one row a (mode, precision); a row's label carries the precision only when several are measured
    rows = [(mode, precision) for mode in modes for precision in precisions]

    def label(row: tuple[str, str]) -> str:
        return row[0] if len(precisions) == 1 else f"{row[0]} {row[1]}"

    runs: dict[tuple[str, str], list[dict]] = {row: [] for row in rows}
    failed: dict[tuple[str, str], str] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(rows)  # each repeat starts at another row: slow phases of a busy machine spread out
        for row in rows[shift:] + rows[:shift]:
            if row in failed:
                continue
            command = [sys.executable, __file__, "--mode", row[0], "--precision", row[1]] + passed_on
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode != 0:
                failed[row] = (finished.stderr.strip().splitlines() or ["no output"])[-1][:160]
                continue
            if args.profile:
                print(finished.stderr[finished.stderr.find("--- profile") :])
            runs[row].append(json.loads(finished.stdout.strip().splitlines()[-1]))
    # "auto" is shown with what it resolved to on this machine
    auto_resolved = {row[1]: f"auto ({runs[row][0]['precision']})" for row in rows if row[1] == "auto" and runs[row]}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}; "
        f"{'model ' + args.model if args.model else 'preset ' + args.preset}, batch {args.batch}, "
        + (
            f"data {args.data} (max_length {args.seq})"
            if args.data
            else f"seq {args.seq} (MCL sentences {args.seq // 4} tokens)"
        )
        + f", {args.steps} timed steps after {args.warmup} warm-up, {args.repeats} repeat(s); "
        f"{'full fine-tuning' if args.full else f'LoRA targets {args.targets}'}; MCL pooling {args.pooling}; "
        f"precision {' '.join(auto_resolved.get(precision, precision) for precision in precisions)}; "
        f"{args.threads} thread(s)"
    )
    spread = args.repeats > 1
    print(
        f"{'step':<22}{'steps/s':>9}{'  (min–max)' if spread else '':<16}{'real tok/s':>11}{'padding':>9}"
        f"{'1st step s':>11}{'peak GiB':>10}{'1st loss':>10}  peak measured as"
    )
    medians: dict[tuple[str, str], float] = {}
    for row in rows:
        if row in failed:
            print(f"{label(row):<22}failed: {failed[row]}")
            continue
        results = runs[row]
        rates = [result["steps_per_s"] for result in results]
        medians[row] = statistics.median(rates)
        ratio = medians[row] / results[0]["steps_per_s"]  # tokens per step are the same in every repeat
        low_high = f"  ({min(rates):.3f}–{max(rates):.3f})" if spread else ""
        loss = f"{results[0]['first_loss']:>10.4f}" if "first_loss" in results[0] else f"{'':>10}"
        print(
            f"{label(row):<22}{medians[row]:>9.3f}{low_high:<16}{results[0]['tokens_per_s'] * ratio:>11.0f}"
            f"{100 * results[0]['padding']:>8.0f}%{statistics.median(r['first_step_s'] for r in results):>11.1f}"
            f"{max(r['peak_gib'] for r in results):>10.2f}{loss}  {results[0]['peak_kind']}"
        )
    for precision in precisions:
        suffix = "" if len(precisions) == 1 else f" ({precision})"
        measured = {mode: medians[(mode, precision)] for mode in modes if (mode, precision) in medians}
        afp_modes = [mode for mode in measured if mode.startswith("afp") and not mode.startswith("afp-cit")]
        for baseline in ("trainer", "plain"):
            for mode in afp_modes:
                if baseline in measured:
                    ratio = measured[baseline] / measured[mode]  # time per step = 1 / steps per second
                    print(f"{mode} step time / {baseline} step time{suffix}: {ratio:.2f}x (target <= 1.15x)")
        if "afp" in measured and "afp-cit" in measured:
            print(f"MCL share of the afp step{suffix}: {100 * (1 - measured['afp'] / measured['afp-cit']):.0f} %")
        for mode in afp_modes:
            if mode != "afp" and "afp" in measured:
                print(f"{mode} vs afp{suffix}: {measured[mode] / measured['afp']:.2f}x the steps/s")
    for mode in modes:
        if (mode, "fp32") in medians and (mode, "bf16") in medians:
            # time per step = 1 / steps per second: fp32 time / bf16 time = bf16 steps/s / fp32 steps/s
            ratio = medians[(mode, "bf16")] / medians[(mode, "fp32")]
            print(f"{mode}: fp32 step time / bf16 step time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
