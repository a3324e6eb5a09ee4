"""`afp align`, top to bottom: output dir → data → tokenizer → model + LoRA → optimizer and schedule → loop → adapter.

The loop (``train_loop``) takes one optimizer step at a time (``train_step``), adds its micro-batches to the
current ``MetricsWindow``, and logs, evaluates and writes checkpoints when the ``Schedule`` says so. Each optimizer
step accumulates ``grad_accumulation`` micro-batches; each micro-batch gives one MCL loss (one forward of all its
sentences, stopped at the pooling layer) and one CIT loss (prompt tokens masked), weighted and summed by
afp_cli/align/losses.py:objective. Checkpoints
hold everything needed to continue bit-for-bit on CPU: weights, optimizer, schedule, RNG, and the step (the data
order is a pure function of seed and step).

On several processes (torchrun, accelerate launch; afp_cli/align/distributed.py) ``train.batch_size`` is the global
micro-batch: every process takes its slice of the same seeded example order, MCL contrasts against the pairs of
every process, metrics are averaged over processes, and only the main process prints and writes files.
"""

from __future__ import annotations

import io
import math
import signal
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from afp_cli.align.checkpoint import (
    CHECKPOINTS,
    TrainingState,
    check_trusted,
    checkpoint_step,
    checkpoint_world_size,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from afp_cli.align.config import AlignConfig, TrainConfig, config_to_yaml
from afp_cli.align.distributed import start_processes
from afp_cli.align.held_out import HeldOut, evaluate_held_out, oriented
from afp_cli.align.layer_choice import TRAINING_SLICE, LayerChoice, measured_pairs, resolve_auto_pooling
from afp_cli.align.losses import objective
from afp_cli.align.resume_check import check_resume as check_resumed_recipe
from afp_cli.align.resume_check import resolved_pooling
from afp_cli.align.run_output import (
    BASE_MODEL_DIR,
    METRICS_FILE,
    append_metrics,
    claim_output_dir,
    open_tensorboard,
    save_built_base_model,
    save_outputs,
    truncate_metrics,
)
from afp_cli.data.batches import TokenCounts, collate, micro_batch_indices, split_held_out, tokenize_examples
from afp_cli.data.training_records import read_training_file
from afp_cli.errors import AfpError
from afp_cli.model.loading import (
    add_lora,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from afp_cli.model.precision import Precision, resolve_precision, training_weights_dtype_name
from afp_cli.progress import progress_bar
from afp_cli.text_files import write_atomically


@dataclass
class AlignResult:
    output_dir: Path
    steps: int
    held_out_before: dict[str, float] = field(default_factory=dict)
    held_out_after: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    stopped_by: str | None = None  # "SIGTERM" or "SIGINT" when a signal stopped the run early (with a checkpoint)
    model: Any = field(default=None, repr=False)  # the trained model (peft-wrapped with LoRA), for library use


# ------------------------------------------------------------------------------------------- setup


def build_tokenizer(config: AlignConfig, texts: list[str]):
    model = config.model
    if model.tokenizer or model.name_or_path:
        return load_tokenizer(model.tokenizer or model.name_or_path, model.trust_remote_code)
    from afp_cli.model.tiny import train_tokenizer

    return train_tokenizer(texts, vocab_size=model.tokenizer_vocab_size)


def load_base_model(config: AlignConfig, tokenizer, device: str, engine_dtype: torch.dtype | None = None):
    """The base model (hub/path, or built at random from an architecture with the run's seed) on ``device``.

    Args:
        engine_dtype: the dtype the engine casts the weights to (DeepSpeed bf16), which then wins over the recipe's.
    """
    model_config = config.model
    # bf16 weights for LoRA on CUDA (the frozen base dominates memory); full fine-tuning keeps fp32 master
    # weights and gets bf16 from autocast, as the official bf16 Trainer run does.
    name = model_config.dtype
    dtype = resolve_dtype(training_weights_dtype_name(device, config.lora.enabled) if name == "auto" else name, device)
    if engine_dtype is not None:
        dtype = engine_dtype
    if model_config.architecture is not None:
        from afp_cli.model.tiny import build_model as build_random_model

        model = build_random_model(model_config.architecture, tokenizer, seed=config.train.seed).to(device, dtype)
    else:
        model = load_causal_lm(
            model_config.name_or_path, dtype=dtype, device=device, trust_remote_code=model_config.trust_remote_code
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    if config.mcl.enabled:
        config.mcl.pooled.check_depth(model.config.num_hidden_layers, f"mcl.pooling '{config.mcl.pooled.spec}'")
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
    from afp_cli.model.lora_targets import mcl_reach_warning, pooling_reach

    layer = config.mcl.pooled.layer
    if not config.mcl.enabled or layer is None:
        return
    warning = mcl_reach_warning(pooling_reach(model, layer), model.config.num_hidden_layers)
    if warning is not None:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def build_optimizer(model, config: AlignConfig, offload_to_cpu: bool = False):
    """AdamW and the recipe's schedule (per optimizer step).

    Args:
        offload_to_cpu: DeepSpeed keeps the optimizer state in CPU memory (ZeRO-Offload). The same AdamW then
            steps there, as DeepSpeed's CPU Adam: what DeepSpeed builds itself from the ``"AdamW"`` optimizer of
            the official offload config (chongli17/CrossLingualAlignment, ``data/config/ds_zero2.offload.json``).
    """
    train = config.train
    parameters = [param for param in model.parameters() if param.requires_grad]
    if offload_to_cpu:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(parameters, lr=train.lr, weight_decay=train.weight_decay, adamw_mode=True)
    else:
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


# ------------------------------------------------------------------------------------------- the engine


class ModelEntry(torch.nn.Module):
    """The one module the engine (DDP, FSDP, DeepSpeed) wraps: every pass afp runs goes through its ``forward``.

    MCL stops its pass at the pooling layer and CIT runs the backbone without the LM head's full logits, so neither
    is a plain ``model(...)`` call; routing both through this forward lets the engine see every pass (DDP prepares
    its gradient all-reduce there, FSDP gathers the sharded weights there).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        # FSDP's auto-wrap looks for the blocks to shard by the wrapped module's _no_split_modules
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(self, compute, *args):
        """``compute(model, *args)``, inside the engine."""
        return compute(self.model, *args)


# ------------------------------------------------------------------------------------------- the run


def align(
    config: AlignConfig,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    stop_after: int | None = None,
    console: Console | None = None,
    trust_checkpoint: bool = False,
) -> AlignResult:
    """Train (or, with ``dry_run``, only validate and describe) an AFP run described by ``config``.

    Args:
        stop_after: stop after this many optimizer steps in this session, with a checkpoint, for ``--resume`` later.
        trust_checkpoint: resume from a checkpoint whose loading runs code (``--trust-checkpoint``; checkpoint.py).
    """
    train = config.train
    output_dir = Path(config.output_dir)
    processes = start_processes(train.device, train.grad_accumulation, find_unused_parameters=not config.cit.enabled)
    check_launch(config, processes)
    console = console or Console()
    if not processes.is_main:  # one progress line and one set of messages: the main process's
        console = Console(file=io.StringIO())

    # data first: a bad line should fail before any model is loaded
    train_file = processes.on_main(lambda: resolve_train_file(config, console))  # a mixture is built once
    examples = read_training_file(
        train_file,
        config.mcl.enabled,
        config.cit.enabled,
        warn=lambda message: console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True),
    )
    if len(examples) - config.data.held_out < train.batch_size:
        raise AfpError(
            f"{train_file}: {len(examples)} examples leave fewer than train.batch_size="
            f"{train.batch_size} for training after data.held_out={config.data.held_out}"
        )
    with ExitStack() as claim:
        last_checkpoint = None
        interrupted = _InterruptFlag()
        if not dry_run:  # the main process claims the folder; the others learn its checkpoint, or its refusal
            claim.enter_context(interrupted)  # from here SIGTERM and Ctrl-C stop the run at the end of a step
            last_checkpoint = processes.on_main(
                lambda: claim.enter_context(
                    claim_output_dir(
                        output_dir,
                        resume,
                        overwrite,
                        accept_resume=lambda found: check_resume(config, found, processes, trust_checkpoint),
                    )
                )
            )
        return _setup_and_train(
            config, examples, last_checkpoint, dry_run, stop_after, console, processes, interrupted, trust_checkpoint
        )


def check_launch(config: AlignConfig, processes) -> None:
    """The global batch must split evenly over the processes launched (every process of a bad launch says so)."""
    batch, world = config.train.batch_size, processes.world_size
    if batch % world:
        raise AfpError(
            f"train.batch_size={batch} is the global batch, split over the {world} processes launched: "
            f"it must be a multiple of {world} (e.g. train.batch_size={batch + world - batch % world})"
        )
    if config.merge and processes.shards_weights:
        raise AfpError(
            f"merge: true needs the whole model in one process, but {processes.engine} shards it: drop "
            "merge and merge the saved adapter afterwards on one process"
        )
    if config.mcl.enabled and not config.mcl.gather_negatives and batch // world < 2:
        raise AfpError(
            f"mcl.gather_negatives is false, so each of the {world} processes needs at least two pairs: "
            f"train.batch_size={batch} gives {batch // world}; use train.batch_size={2 * world} or more"
        )


def check_resume(config: AlignConfig, checkpoint: Path, processes, trust_checkpoint: bool = False) -> None:
    """Before a resume changes anything: a checkpoint that loads without running code (or one the user vouches
    for), as many processes as wrote it, and a recipe that continues the same run (afp_cli/align/resume_check.py)."""
    check_trusted(checkpoint, trust_checkpoint)
    check_resume_world_size(checkpoint, processes)
    check_resumed_recipe(config, Path(config.output_dir) / "recipe.yaml", checkpoint_step(checkpoint))


def check_resume_world_size(checkpoint: Path | None, processes) -> None:
    """A checkpoint continues bit for bit only on as many processes as wrote it (one random stream per process)."""
    if checkpoint is None:
        return
    written_by = checkpoint_world_size(checkpoint)
    if written_by != processes.world_size:
        raise AfpError(
            f"{checkpoint} was written by {written_by} process(es) but {processes.world_size} were "
            f"launched: resume with {written_by} (e.g. torchrun --nproc-per-node {written_by} -m afp_cli "
            "align ... --resume); nothing was changed"
        )


@dataclass
class Run:
    """What the loop works with, set up once: the model (and the engine's wrapper around it), data, optimizer."""

    config: AlignConfig
    processes: Any
    model: Any  # the peft-wrapped (or full) model
    entry: Any  # ModelEntry around it, wrapped by the engine: every training and evaluation pass goes through it
    optimizer: Any
    scheduler: Any
    train_set: list
    held_out_set: HeldOut  # pairs oriented by language (afp_cli/align/held_out.py)
    tokenizer: Any
    device: str
    precision: Precision  # train.precision resolved for this device (auto → bf16 or fp32)
    parameter_counts: tuple[int, int]  # trainable, total
    pooling_choice: LayerChoice | None = None  # what mcl.pooling auto measured (None: not measured in this session)
    packs: bool = False  # data.packing as it applies to this model (decided once, at set-up: step_speed.py)

    @property
    def autocast(self):
        return self.precision.autocast()

    def evaluate(self) -> dict[str, float]:
        return evaluate_held_out(
            self.model,
            self.held_out_set,
            self.config.mcl.pooled,
            self.config.train.batch_size,
            self.tokenizer.pad_token_id,
            self.device,
            self.autocast,
            through=self.entry,
        )


def setup_run(config: AlignConfig, examples, processes, console: Console, write_files: bool = True) -> Run:
    """Tokenizer → model + LoRA → optimizer and schedule → the engine's wrapper, identical on every process."""
    train = config.train
    output_dir = Path(config.output_dir)
    torch.manual_seed(train.seed)
    device = processes.device or resolve_device(train.device)
    if train.cpu_threads is not None and device == "cpu":
        torch.set_num_threads(train.cpu_threads)
    if device.startswith("cuda") and train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = processes.on_main(lambda: build_tokenizer(config, _tokenizer_texts(examples)))
    tokenized, counts = tokenize_examples(
        examples,
        tokenizer,
        config.data.max_length,
        config.mcl.enabled,
        config.cit.enabled,
        config.cit.learn_prompt,
        config.cit.append_eos,
    )
    train_indices, held_out_indices = split_held_out(len(tokenized), config.data.held_out, train.seed)
    train_set = [tokenized[index] for index in train_indices]
    held_out_set = oriented([tokenized[index] for index in held_out_indices], [examples[i] for i in held_out_indices])
    model = load_base_model(config, tokenizer, device, processes.weights_dtype)
    if config.model.architecture is not None and config.lora.enabled and write_files:
        # on_main: a full disk on the main process ends every process with its one line, none waits for it
        processes.on_main(lambda: save_built_base_model(model, tokenizer, output_dir / BASE_MODEL_DIR))
    model = make_trainable(model, config)
    trainable, total = count_parameters(model)
    precision = resolve_precision(train.precision, device)
    sizes = (len(train_set), len(held_out_set))
    _describe(console, config, *sizes, counts, trainable, total, device, precision, model, processes)
    check_mcl_reach(model, config, console)
    packs = False
    if config.data.packing or train.compile:
        from afp_cli.align.step_speed import check_compile, compile_blocks, packs_batches

        packs = packs_batches(model, config, console)  # a model that mixes packed texts trains padded, with a warning
        if train.compile:
            check_compile(device, processes)
            compile_blocks(model)
    optimizer, scheduler = build_optimizer(model, config, processes.offloads_optimizer)
    entry, optimizer = processes.prepare(ModelEntry(model), optimizer, train.batch_size // processes.world_size)
    # mcl.pooling auto: measured on the base model before the first step (afp_cli/align/layer_choice.py)
    slice_indices = train_indices[:TRAINING_SLICE]
    auto_pairs = measured_pairs(
        held_out_set, oriented([tokenized[i] for i in slice_indices], [examples[i] for i in slice_indices])
    )
    run = Run(
        config,
        processes,
        model,
        entry,
        optimizer,
        scheduler,
        train_set,
        held_out_set,
        tokenizer,
        device,
        precision,
        (trainable, total),
        packs=packs,
    )
    run.pooling_choice = resolve_auto_pooling(
        config, model, *auto_pairs, tokenizer.pad_token_id, device, run.autocast, entry, processes, console
    )
    if run.pooling_choice is not None:  # the reach of the layer just chosen (auto had none to check above)
        check_mcl_reach(model, config, console)
    return run


def _setup_and_train(
    config: AlignConfig,
    examples,
    last_checkpoint: Path | None,
    dry_run: bool,
    stop_after: int | None,
    console: Console,
    processes,
    interrupted: _InterruptFlag,
    trust_checkpoint: bool = False,
) -> AlignResult:
    """Set up → held-out evaluation → loop → adapter, inside the output folder claimed by ``align``.

    Every file is written by the main process through ``on_main``: when the disk refuses a write, every process
    ends with the same one line instead of the others waiting for the main one at a barrier.
    """
    train = config.train
    output_dir = Path(config.output_dir)
    if last_checkpoint is not None and config.mcl.requested_pooling.auto and config.mcl.pooling_resolved is None:
        # the layer auto chose when the run started: a resume never measures again
        config.mcl.resolve_pooling(processes.on_main(lambda: resolved_pooling(output_dir / "recipe.yaml")))
    run = setup_run(config, examples, processes, console, write_files=not dry_run)
    if dry_run:
        console.print(config_to_yaml(config), markup=False, highlight=False)
        console.print("[bold]dry run[/]: recipe, data and model are valid; nothing was trained or written.")
        return AlignResult(output_dir, 0)

    processes.on_main(lambda: write_atomically(output_dir / "recipe.yaml", config_to_yaml(config)))
    state = TrainingState(step=0, extra={})
    if last_checkpoint is not None:
        state = load_checkpoint(
            last_checkpoint,
            run.model,
            run.optimizer,
            run.scheduler,
            processes.rank,
            processes.load_engine_state,
            trust=trust_checkpoint,
        )
        processes.on_main(lambda: truncate_metrics(output_dir / METRICS_FILE, state.step))
        console.print(f"resumed from {last_checkpoint} (step {state.step})")
    else:
        state.extra["held_out_before"] = run.evaluate()
        if run.pooling_choice is not None:  # kept in the checkpoints, so a resumed run's summary has it too
            state.extra["pooling_auto"] = run.pooling_choice.summary()
    run.model.train()
    writer = open_tensorboard(output_dir, train.tensorboard) if processes.is_main else None
    stopped_early = train_loop(run, state, stop_after, console, writer, interrupted)
    if writer is not None:
        writer.close()
    result = AlignResult(
        output_dir,
        state.step,
        state.extra.get("held_out_before", {}),
        stopped_early=stopped_early,
        stopped_by=interrupted.stopped_by if stopped_early else None,
        model=run.model,
    )
    if stopped_early:
        if result.stopped_by is None:  # a signal's line is the command's: on stderr, with the signal's exit code
            console.print(f"stopped after step {state.step}; continue with --resume")
        processes.barrier()
        return result
    result.held_out_after = run.evaluate()
    trainable, total = run.parameter_counts
    state_dict = processes.full_state_dict(run.entry)  # FSDP / DeepSpeed: gathered from every process's shard
    processes.on_main(
        lambda: save_outputs(
            run.model,
            run.tokenizer,
            config,
            output_dir,
            state_dict,
            {
                "steps": result.steps,
                "trainable_parameters": trainable,
                "total_parameters": total,
                "precision": run.precision.name,
                "held_out_before": result.held_out_before,
                "held_out_after": result.held_out_after,
                "held_out_directions": list(run.held_out_set.directions),
                **({"pooling_auto": state.extra["pooling_auto"]} if "pooling_auto" in state.extra else {}),
                **({"processes": processes.world_size} if processes.world_size > 1 else {}),
            },
        )
    )
    _print_summary(console, result, run.held_out_set.directions)
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


# ------------------------------------------------------------------------------------------- one step


@dataclass
class MicroBatchResult:
    """One micro-batch's losses, averaged over processes (0.0 for an objective that is off), and its tokens, summed."""

    total: float
    mcl: float
    cit: float
    tokens: float


def backward_micro_batch(run: Run, global_indices: list[int], last_of_step: bool = True) -> MicroBatchResult:
    """Forward and backward of this process's share of one micro-batch (given by the global batch's example
    indices)."""
    share = len(global_indices) // run.processes.world_size
    mine = global_indices[run.processes.rank * share : (run.processes.rank + 1) * share]
    # compiled blocks: widths rounded up to few sizes, so the compiled shapes repeat
    batch = collate(
        [run.train_set[index] for index in mine],
        run.tokenizer.pad_token_id,
        run.packs,  # where the model keeps packed texts apart (decided at set-up)
        bucket=run.config.train.compile,
        max_width=run.config.data.max_length,
    ).to(run.device)
    with run.autocast():
        parts = run.entry(objective, batch, run.config)
    run.processes.backward(parts.total, run.config.train.grad_accumulation, last_of_step)
    total, mcl, cit = run.processes.mean([float(parts.total.detach()), parts.mcl or 0.0, parts.cit or 0.0])
    return MicroBatchResult(total, mcl, cit, run.processes.sum(batch.token_count))


def train_step(run: Run, step: int) -> list[MicroBatchResult]:
    """Optimizer step ``step + 1``: ``grad_accumulation`` micro-batches, clipping, then optimizer and schedule.

    A loss or gradient norm that is not finite stops the run with the last good checkpoint named.
    """
    train, processes = run.config.train, run.processes
    run.optimizer.zero_grad(set_to_none=True)
    results = []
    for micro in range(train.grad_accumulation):
        indices = micro_batch_indices(
            step * train.grad_accumulation + micro, train.batch_size, len(run.train_set), train.seed
        )
        last_of_step = micro == train.grad_accumulation - 1
        # the gradient all-reduce waits for the step's last micro-batch
        with nullcontext() if last_of_step else processes.no_sync(run.entry):
            result = backward_micro_batch(run, indices, last_of_step)
        if not math.isfinite(result.total):
            _diverged(run, step + 1, f"loss became {result.total}")
        results.append(result)
    if train.max_grad_norm > 0:
        parameters = [param for param in run.model.parameters() if param.requires_grad]
        norm = processes.clip_grad_norm(run.entry, parameters, train.max_grad_norm)
        if norm is not None and not torch.isfinite(norm):
            _diverged(run, step + 1, f"gradient norm became {float(norm)}")
    run.optimizer.step()
    run.scheduler.step()
    return results


class MetricsWindow:
    """The micro-batches since the last metrics record: their mean losses and the tokens per second."""

    def __init__(self, config: AlignConfig, device: str):
        self.config, self.device = config, device
        self.reset()

    def reset(self) -> None:
        self.total = self.mcl = self.cit = 0.0
        self.micro_batches, self.tokens, self.started = 0, 0, time.perf_counter()

    def add(self, result: MicroBatchResult) -> None:
        self.total += result.total
        self.mcl += result.mcl
        self.cit += result.cit
        self.micro_batches += 1
        self.tokens += result.tokens

    def record(self, step: int, lr: float) -> dict[str, Any]:
        """One line of metrics.jsonl: step, loss, lr, tokens_per_s[, mcl][, cit][, gpu_peak_gib]."""
        elapsed = time.perf_counter() - self.started
        record = {
            "step": step,
            "loss": self.total / self.micro_batches,
            "lr": lr,
            "tokens_per_s": self.tokens / max(elapsed, 1e-9),
        }
        if self.config.mcl.enabled:
            record["mcl"] = self.mcl / self.micro_batches
        if self.config.cit.enabled:
            record["cit"] = self.cit / self.micro_batches
        if self.device.startswith("cuda"):  # this process's peak so far (the main one's, when several)
            record["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return record


@dataclass(frozen=True)
class Schedule:
    """After which optimizer steps (counted from 1) the loop logs, evaluates and writes a checkpoint."""

    train: TrainConfig

    def evaluates(self, step: int) -> bool:
        """Every ``eval_every`` steps; the final step is evaluated once, after the loop."""
        return bool(self.train.eval_every) and step % self.train.eval_every == 0 and step != self.train.max_steps

    def logs(self, step: int) -> bool:
        return step % self.train.log_every == 0 or step == self.train.max_steps or self.evaluates(step)

    def saves(self, step: int) -> bool:
        return (bool(self.train.save_every) and step % self.train.save_every == 0) or step == self.train.max_steps


# ------------------------------------------------------------------------------------------- the loop


def train_loop(
    run: Run, state: TrainingState, stop_after: int | None, console: Console, writer, interrupted: _InterruptFlag
) -> bool:
    """Optimizer steps from ``state.step`` to ``max_steps``; returns True when it stopped early (with a checkpoint)."""
    schedule, window = Schedule(run.config.train), MetricsWindow(run.config, run.device)
    first_step, max_steps = state.step, run.config.train.max_steps
    directions = run.held_out_set.directions
    with progress_bar(console, stats=True, eta=True) as progress:
        task = progress.add_task("step", total=max_steps, completed=state.step, stats="")
        while state.step < max_steps:
            for result in train_step(run, state.step):
                window.add(result)
            state.step += 1
            if schedule.logs(state.step):
                record = window.record(state.step, run.scheduler.get_last_lr()[0])
                if schedule.evaluates(state.step):
                    record.update({f"held_out_{key}": value for key, value in run.evaluate().items()})
                    progress.console.print(f"step {state.step}: {_format_record(record, directions)}", highlight=False)
                # on_main: a full disk stops every process after this step, not only the main one
                run.processes.on_main(
                    lambda: append_metrics(Path(run.config.output_dir) / METRICS_FILE, record, writer)  # noqa: B023
                )
                progress.update(task, stats=_format_record(record, directions))
                window.reset()
            progress.update(task, completed=state.step)
            # a signal reaches the processes at different moments (or only some): they vote, and all stop after
            # the same step, with the same checkpoint
            stopped_by = interrupted.vote(run.processes)
            stop_now = (stop_after is not None and state.step - first_step >= stop_after) or stopped_by is not None
            if schedule.saves(state.step) or stop_now:
                _save_checkpoint(run, state)
            if stop_now and state.step < max_steps:
                return True
    return False


def _save_checkpoint(run: Run, state: TrainingState) -> None:
    """Every process hands its random state to the main process, which writes the one checkpoint."""
    output_dir = Path(run.config.output_dir)
    rng_per_process = run.processes.gather_objects(rng_state())
    engine_state = None
    if run.processes.shards_weights:  # each process writes its shard; the main process moves them in
        engine_state = output_dir / CHECKPOINTS / f".engine-{state.step:08d}"
        run.processes.save_engine_state(engine_state)
        run.processes.barrier()
    # no process runs ahead of a checkpoint that is not complete yet, and a full disk stops every one of them
    run.processes.on_main(
        lambda: save_checkpoint(
            output_dir,
            run.model,
            run.optimizer,
            run.scheduler,
            state,
            run.config.train.keep_checkpoints,
            rng_per_process,
            engine_state,
        )
    )


def _diverged(run: Run, step: int, what: str):
    checkpoints = list_checkpoints(Path(run.config.output_dir))
    kept = f"last good checkpoint: {checkpoints[-1]}" if checkpoints else "no checkpoint was written yet"
    raise AfpError(f"{what} at step {step}: training stopped ({kept}); try a lower train.lr")


def _format_record(record: dict[str, Any], directions: tuple[str, str]) -> str:
    """One progress line: the losses, and at an evaluation step held-out retrieval both ways (named by
    ``directions``, e.g. en→zh and zh→en) and the held-out CIT loss."""
    parts = [f"loss {record['loss']:.4f}"]
    for key in ("mcl", "cit"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['tokens_per_s']:.0f} tok/s")
    retrieval = [
        f"{direction} {record[key]:.3f}"
        for key, direction in zip(("held_out_retrieval_top1", "held_out_retrieval_top1_reverse"), directions)
        if key in record
    ]
    if retrieval:
        parts.append(f"held-out retrieval {' / '.join(retrieval)}")
    if "held_out_cit_loss" in record:
        parts.append(f"held-out cit_loss {record['held_out_cit_loss']:.3f}")
    return " · ".join(parts)


class _InterruptFlag:
    """SIGTERM and SIGINT (Ctrl-C) become a clean stop at the end of the current step, with a checkpoint.

    SIGTERM is what Slurm (preemption, ``--signal``, scancel), Kubernetes and spot instances send before they kill,
    and what torchrun and accelerate forward to their workers; it gets the same path as Ctrl-C. The first signal is
    noted; the loop's vote (``vote``) then stops every process after the same step. A repeated SIGTERM changes
    nothing (launchers and schedulers often send it twice: to the launcher, which forwards it, and to the whole
    job), and neither does a second Ctrl-C within a second (torchrun forwards the terminal's); a later Ctrl-C aborts
    at once (KeyboardInterrupt), and the checkpoint being written, if any, is removed half-done, never left broken.
    """

    _REPEAT_WINDOW_S = 1.0

    def __init__(self):
        self.received: set[int] = set()
        self.stopped_by: str | None = None  # the signal the processes agreed to stop for
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received and time.monotonic() - self._first_at > self._REPEAT_WINDOW_S:
            raise KeyboardInterrupt
        if not self.received:
            self._first_at = time.monotonic()
        self.received.add(signum)

    def vote(self, processes) -> str | None:
        """The signal any process received (SIGTERM over SIGINT: the scheduler's), the same on every process."""
        sigterm, sigint = processes.mean(
            [float(signal.SIGTERM in self.received), float(signal.SIGINT in self.received)]
        )
        self.stopped_by = "SIGTERM" if sigterm > 0 else "SIGINT" if sigint > 0 else None
        return self.stopped_by

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread): keep default handling
                break
        return self

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}
        return False


def _tokenizer_texts(examples) -> list[str]:
    texts = []
    for example in examples:
        texts.extend(text for text in (example.sent0, example.sent1, example.hard_negative, example.clm_text) if text)
    return texts


def _describe(
    console,
    config,
    train_size,
    held_out_size,
    counts: TokenCounts,
    trainable,
    total,
    device,
    precision: Precision,
    model,
    processes,
) -> None:
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
    where = f"device {device}"
    if processes.world_size > 1:
        where = (
            f"{processes.world_size} processes ({processes.engine}, {device} on the main one), global batch "
            f"{config.train.batch_size} = {processes.world_size} × {config.train.batch_size // processes.world_size}"
            + ("" if not config.mcl.enabled or config.mcl.gather_negatives else ", MCL negatives local")
        )
    console.print(
        f"[bold]afp align[/] · {mode} · {' + '.join(objectives)} · lr {config.train.lr:g} · {where} · "
        f"{'bf16 autocast' if precision.bf16 else 'fp32'}",
        highlight=False,
    )
    if precision.note:
        console.print(f"precision: {precision.note}", markup=False, highlight=False)
    console.print(
        f"examples: {train_size} train, {held_out_size} held out · tokens: "
        f"{counts.sentence_tokens} in sentences, {counts.instruction_tokens} in instructions "
        f"({counts.target_tokens} answer targets)"
    )
    if counts.truncated_sentences or counts.truncated_instructions:
        console.print(
            f"[yellow]truncated to data.max_length={config.data.max_length}:[/] "
            f"{counts.truncated_sentences} sentences, {counts.truncated_instructions} instruction texts"
        )
    console.print(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f} %)")


def _print_summary(console, result: AlignResult, directions: tuple[str, str]) -> None:
    console.print(f"[bold green]done[/]: {result.steps} steps → {result.output_dir}")
    for key, label in (
        ("retrieval_top1", f"held-out retrieval accuracy ({directions[0]})"),
        ("retrieval_top1_reverse", f"held-out retrieval accuracy ({directions[1]})"),
        ("cit_loss", "held-out CIT loss"),
    ):
        if key in result.held_out_before and key in result.held_out_after:
            console.print(f"{label}: {result.held_out_before[key]:.3f} → {result.held_out_after[key]:.3f}")
