"""`afp align`, top to bottom: output dir → data → tokenizer → model + LoRA → optimizer and schedule → loop → adapter.

Each optimizer step accumulates ``grad_accumulation`` micro-batches; each micro-batch gives one MCL loss (one
forward of all its sentences, stopped at the pooling layer) and one CIT loss (prompt tokens masked). Checkpoints
hold everything needed to continue bit-for-bit on CPU: weights, optimizer, schedule, RNG, and the step (the data
order is a pure function of seed and step).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from afp_cli.checkpoint import TrainingState, list_checkpoints, load_checkpoint, save_checkpoint
from afp_cli.config import AlignConfig, config_to_yaml
from afp_cli.data.batches import TokenCounts, collate, micro_batch_indices, split_held_out, tokenize_examples
from afp_cli.data.training_records import read_training_file
from afp_cli.errors import AfpError
from afp_cli.held_out import evaluate_held_out
from afp_cli.layer_encoder import sentence_vectors
from afp_cli.losses import LossParts, causal_lm_loss, info_nce
from afp_cli.model import add_lora, count_parameters, load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from afp_cli.report import write_atomically
from afp_cli.run_output import (BASE_MODEL_DIR, METRICS_FILE, append_metrics, claim_output_dir, open_tensorboard,
                                save_built_base_model, save_outputs, truncate_metrics)


@dataclass
class AlignResult:
    output_dir: Path
    steps: int
    held_out_before: dict[str, float] = field(default_factory=dict)
    held_out_after: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    model: Any = field(default=None, repr=False)  # the trained model (peft-wrapped with LoRA), for library use


# ------------------------------------------------------------------------------------------- setup


def build_tokenizer(config: AlignConfig, texts: list[str]):
    model = config.model
    if model.tokenizer or model.name_or_path:
        return load_tokenizer(model.tokenizer or model.name_or_path, model.trust_remote_code)
    from afp_cli.tiny import train_tokenizer

    return train_tokenizer(texts, vocab_size=model.tokenizer_vocab_size)


def load_base_model(config: AlignConfig, tokenizer, device: str):
    """The base model (hub/path, or built at random from an architecture with the run's seed) on ``device``."""
    model_config = config.model
    # bf16 weights for LoRA on CUDA (the frozen base dominates memory); full fine-tuning keeps fp32 master
    # weights and gets bf16 from autocast, as the official bf16 Trainer run does.
    dtype = resolve_dtype(model_config.dtype, device)
    if not config.lora.enabled and model_config.dtype == "auto":
        dtype = torch.float32
    if model_config.architecture is not None:
        from afp_cli.tiny import build_model as build_random_model

        model = build_random_model(model_config.architecture, tokenizer, seed=config.train.seed).to(device, dtype)
    else:
        model = load_causal_lm(model_config.name_or_path, dtype=dtype, device=device,
                               trust_remote_code=model_config.trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    layer = config.mcl.pooling_layer
    depth = model.config.num_hidden_layers
    if config.mcl.enabled and layer is not None and layer > depth:
        raise AfpError(f"mcl.pooling '{config.mcl.pooling}': layer {layer} is beyond the model's depth "
                       f"({depth} layers; valid layers are 0..{depth})")
    return model


def make_trainable(model, config: AlignConfig):
    """Gradient checkpointing if asked, then LoRA adapters (or, with lora.enabled false, every weight)."""
    lora = config.lora
    if config.train.gradient_checkpointing:
        # transformers 5 renamed it; 4.x has only the old name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora.enabled:
            model.enable_input_require_grads()
    if not lora.enabled:
        return model
    return add_lora(model, lora.r, lora.alpha, lora.dropout, lora.targets, lora.target_modules, seed=config.train.seed)


def check_mcl_reach(model, config: AlignConfig, console: Console) -> None:
    """Warn when MCL pools a layer below which (almost) nothing is trained: its loss would barely move."""
    from afp_cli.lora_targets import mcl_reach_warning, pooling_reach

    layer = config.mcl.pooling_layer
    if not config.mcl.enabled or layer is None:
        return
    warning = mcl_reach_warning(pooling_reach(model, layer), model.config.num_hidden_layers)
    if warning is not None:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def build_optimizer(model, config: AlignConfig):
    train = config.train
    parameters = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay)
    warmup = int(round(train.warmup_ratio * train.max_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, train.max_steps - warmup)
        if train.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if train.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------------------- losses


def loss_step(model, batch, config: AlignConfig) -> LossParts:
    """Weighted MCL + CIT loss of one micro-batch."""
    total = None
    mcl_value = cit_value = None
    if config.mcl.enabled:
        vectors = sentence_vectors(model, batch.sentence_ids, batch.sentence_mask, config.mcl.pooling_layer,
                                   config.mcl.pooling_method)
        columns = vectors.chunk(batch.sentences_per_example)
        hard_negatives = columns[2] if len(columns) > 2 else None
        mcl = info_nce(columns[0], columns[1], config.mcl.temperature, hard_negatives,
                       config.mcl.hard_negative_weight, config.mcl.symmetric)
        total = config.mcl.weight * mcl
        mcl_value = float(mcl.detach())
    if config.cit.enabled:
        cit = causal_lm_loss(model, batch.instruction_ids, batch.instruction_mask, batch.instruction_labels)
        total = config.cit.weight * cit if total is None else total + config.cit.weight * cit
        cit_value = float(cit.detach())
    return LossParts(total, mcl_value, cit_value)


# ------------------------------------------------------------------------------------------- the run


def align(config: AlignConfig, resume: bool = False, overwrite: bool = False, dry_run: bool = False,
          stop_after: int | None = None, console: Console | None = None) -> AlignResult:
    """Train (or, with ``dry_run``, only validate and describe) an AFP run described by ``config``.

    Args:
        stop_after: stop after this many optimizer steps in this session, with a checkpoint, for ``--resume`` later.
    """
    console = console or Console()
    train = config.train
    output_dir = Path(config.output_dir)

    # data first: a bad line should fail before any model is loaded
    train_file = resolve_train_file(config, console)
    examples = read_training_file(train_file, config.mcl.enabled, config.cit.enabled,
                                  warn=lambda message: console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True))
    if len(examples) - config.data.held_out < train.batch_size:
        raise AfpError(f"{train_file}: {len(examples)} examples leave fewer than train.batch_size="
                       f"{train.batch_size} for training after data.held_out={config.data.held_out}")
    with nullcontext() if dry_run else claim_output_dir(output_dir, resume, overwrite) as last_checkpoint:
        return _setup_and_train(config, examples, last_checkpoint, dry_run, stop_after, console)


def _setup_and_train(config: AlignConfig, examples, last_checkpoint: Path | None, dry_run: bool,
                     stop_after: int | None, console: Console) -> AlignResult:
    """Tokenizer → model + LoRA → optimizer → loop → adapter, inside the output folder claimed by ``align``."""
    train = config.train
    output_dir = Path(config.output_dir)
    torch.manual_seed(train.seed)
    device = resolve_device(train.device)
    if train.cpu_threads is not None and device == "cpu":
        torch.set_num_threads(train.cpu_threads)
    if device.startswith("cuda") and train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = build_tokenizer(config, _tokenizer_texts(examples))
    tokenized, counts = tokenize_examples(examples, tokenizer, config.data.max_length, config.mcl.enabled,
                                          config.cit.enabled, config.cit.learn_prompt, config.cit.append_eos)
    train_indices, held_out_indices = split_held_out(len(tokenized), config.data.held_out, train.seed)
    train_set = [tokenized[index] for index in train_indices]
    held_out_set = [tokenized[index] for index in held_out_indices]
    model = load_base_model(config, tokenizer, device)
    if config.model.architecture is not None and config.lora.enabled and not dry_run:
        save_built_base_model(model, tokenizer, output_dir / BASE_MODEL_DIR)
    model = make_trainable(model, config)
    trainable, total = count_parameters(model)
    _describe(console, config, len(train_set), len(held_out_set), counts, trainable, total, device, model)
    check_mcl_reach(model, config, console)
    if dry_run:
        console.print(config_to_yaml(config), markup=False, highlight=False)
        console.print("[bold]dry run[/]: recipe, data and model are valid; nothing was trained or written.")
        return AlignResult(output_dir, 0)

    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / "recipe.yaml", config_to_yaml(config))
    optimizer, scheduler = build_optimizer(model, config)
    autocast = _autocast_factory(device, train.precision)
    state = TrainingState(step=0, extra={})
    if last_checkpoint is not None:
        state = load_checkpoint(last_checkpoint, model, optimizer, scheduler)
        truncate_metrics(output_dir / METRICS_FILE, state.step)
        console.print(f"resumed from {last_checkpoint} (step {state.step})")
    else:
        state.extra["held_out_before"] = evaluate_held_out(model, held_out_set, config, tokenizer.pad_token_id,
                                                           device, autocast)
    model.train()
    writer = open_tensorboard(output_dir, train.tensorboard)
    stopped_early = False
    interrupted = _InterruptFlag()
    with interrupted:
        stopped_early = _loop(model, optimizer, scheduler, config, train_set, held_out_set, tokenizer, device,
                              autocast, state, output_dir, stop_after, console, writer, interrupted)
    if writer is not None:
        writer.close()
    result = AlignResult(output_dir, state.step, state.extra.get("held_out_before", {}), stopped_early=stopped_early,
                         model=model)
    if stopped_early:
        console.print(f"stopped after step {state.step}; continue with --resume")
        return result
    result.held_out_after = evaluate_held_out(model, held_out_set, config, tokenizer.pad_token_id, device, autocast)
    save_outputs(model, tokenizer, config, output_dir,
                 {"steps": result.steps, "trainable_parameters": trainable, "total_parameters": total,
                  "held_out_before": result.held_out_before, "held_out_after": result.held_out_after})
    _print_summary(console, result)
    return result


def resolve_train_file(config: AlignConfig, console: Console) -> Path:
    """The recipe's training file, or the mixture its ``data.build`` section describes (built once, cached)."""
    if config.data.train_file is not None:
        return Path(config.data.train_file)
    from afp_cli.data.build import cache_root, ensure_mixture, pin_hub_inputs, pinned_build_section

    # hub inputs pinned to a commit first, and the pins written back, so recipe.yaml records what was read
    mixture = pin_hub_inputs(config.data.mixture(seed=config.train.seed))
    config.data.build = pinned_build_section(config.data.build, mixture)
    path = ensure_mixture(mixture, cache_root() / "data")
    console.print(f"training data: {path}")
    return path


def _loop(model, optimizer, scheduler, config, train_set, held_out_set, tokenizer, device, autocast, state,
          output_dir, stop_after, console, writer, interrupted) -> bool:
    """Optimizer steps from ``state.step`` to ``max_steps``; returns True when it stopped early (with a checkpoint)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    train = config.train
    parameters = [param for param in model.parameters() if param.requires_grad]
    first_step = state.step
    window_tokens, window_start = 0, time.perf_counter()
    sums = {"loss": 0.0, "mcl": 0.0, "cit": 0.0, "count": 0}
    columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task("align", total=train.max_steps, completed=state.step, stats="")
        while state.step < train.max_steps:
            optimizer.zero_grad(set_to_none=True)
            for micro in range(train.grad_accumulation):
                micro_index = state.step * train.grad_accumulation + micro
                indices = micro_batch_indices(micro_index, train.batch_size, len(train_set), train.seed)
                batch = collate([train_set[index] for index in indices], tokenizer.pad_token_id).to(device)
                with autocast():
                    parts = loss_step(model, batch, config)
                loss_value = float(parts.total.detach())
                if not math.isfinite(loss_value):
                    _diverged(output_dir, state.step + 1, f"loss became {loss_value}")
                (parts.total / train.grad_accumulation).backward()
                window_tokens += batch.token_count
                sums["loss"] += loss_value
                sums["mcl"] += parts.mcl or 0.0
                sums["cit"] += parts.cit or 0.0
                sums["count"] += 1
            if train.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(parameters, train.max_grad_norm)
                if not torch.isfinite(norm):
                    _diverged(output_dir, state.step + 1, f"gradient norm became {float(norm)}")
            optimizer.step()
            scheduler.step()
            state.step += 1

            evaluate_now = bool(train.eval_every) and state.step % train.eval_every == 0 and state.step != train.max_steps
            if state.step % train.log_every == 0 or state.step == train.max_steps or evaluate_now:
                elapsed = time.perf_counter() - window_start
                record = {"step": state.step, "loss": sums["loss"] / sums["count"],
                          "lr": scheduler.get_last_lr()[0], "tokens_per_s": window_tokens / max(elapsed, 1e-9)}
                if config.mcl.enabled:
                    record["mcl"] = sums["mcl"] / sums["count"]
                if config.cit.enabled:
                    record["cit"] = sums["cit"] / sums["count"]
                if evaluate_now:  # the final step is evaluated once, after the loop
                    held_out = evaluate_held_out(model, held_out_set, config, tokenizer.pad_token_id, device, autocast)
                    record.update({f"held_out_{key}": value for key, value in held_out.items()})
                    progress.console.print(f"step {state.step}: {_format_record(record)}", highlight=False)
                append_metrics(output_dir / METRICS_FILE, record, writer)
                progress.update(task, stats=_format_record(record))
                window_tokens, window_start = 0, time.perf_counter()
                sums = {"loss": 0.0, "mcl": 0.0, "cit": 0.0, "count": 0}
            progress.update(task, completed=state.step)

            stop_now = (stop_after is not None and state.step - first_step >= stop_after) or interrupted.raised
            if (train.save_every and state.step % train.save_every == 0) or stop_now or state.step == train.max_steps:
                save_checkpoint(output_dir, model, optimizer, scheduler, state, train.keep_checkpoints)
            if stop_now and state.step < train.max_steps:
                return True
    return False


def _diverged(output_dir: Path, step: int, what: str):
    checkpoints = list_checkpoints(output_dir)
    kept = f"last good checkpoint: {checkpoints[-1]}" if checkpoints else "no checkpoint was written yet"
    raise AfpError(f"{what} at step {step}: training stopped ({kept}); try a lower train.lr")


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"loss {record['loss']:.4f}"]
    for key in ("mcl", "cit"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['tokens_per_s']:.0f} tok/s")
    for key in ("held_out_retrieval_top1", "held_out_cit_loss"):
        if key in record:
            parts.append(f"{key.replace('held_out_', 'held-out ')} {record[key]:.3f}")
    return " · ".join(parts)


def _autocast_factory(device: str, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    if not use_bf16:
        return nullcontext
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)


class _InterruptFlag:
    """Turn the first Ctrl-C into a clean stop at the end of the current step (with a checkpoint)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. inside a test runner thread): keep default handling
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _tokenizer_texts(examples) -> list[str]:
    texts = []
    for example in examples:
        texts.extend(text for text in (example.sent0, example.sent1, example.hard_negative, example.clm_text) if text)
    return texts


def _describe(console, config, train_size, held_out_size, counts: TokenCounts, trainable, total, device,
              model) -> None:
    if config.lora.enabled:
        targets = model.peft_config["default"].target_modules
        shown = targets if isinstance(targets, str) else ", ".join(sorted(targets))
        mode = f"LoRA r={config.lora.r} on {shown}"
    else:
        mode = "full fine-tuning"
    objectives = []
    if config.mcl.enabled:
        objectives.append(f"{config.mcl.weight:g}·MCL ({config.mcl.pooling}, τ={config.mcl.temperature:g})")
    if config.cit.enabled:
        objectives.append(f"{config.cit.weight:g}·CIT")
    console.print(f"[bold]afp align[/] · {mode} · {' + '.join(objectives)} · lr {config.train.lr:g} · device {device}",
                  highlight=False)
    console.print(f"examples: {train_size} train, {held_out_size} held out · tokens: "
                  f"{counts.sentence_tokens} in sentences, {counts.instruction_tokens} in instructions "
                  f"({counts.target_tokens} answer targets)")
    if counts.truncated_sentences or counts.truncated_instructions:
        console.print(f"[yellow]truncated to data.max_length={config.data.max_length}:[/] "
                      f"{counts.truncated_sentences} sentences, {counts.truncated_instructions} instruction texts")
    console.print(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f} %)")


def _print_summary(console, result: AlignResult) -> None:
    console.print(f"[bold green]done[/]: {result.steps} steps → {result.output_dir}")
    for key, label in (("retrieval_top1", "held-out retrieval accuracy (src→tgt)"), ("cit_loss", "held-out CIT loss")):
        if key in result.held_out_before and key in result.held_out_after:
            console.print(f"{label}: {result.held_out_before[key]:.3f} → {result.held_out_after[key]:.3f}")
