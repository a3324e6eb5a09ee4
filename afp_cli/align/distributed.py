"""One process or several: who this process is, its share of each batch, and what every process must agree on.

afp runs on the engines users already launch with. Under ``torchrun`` or ``accelerate launch`` with several
processes (or with an FSDP / DeepSpeed accelerate config) the loop goes through accelerate's ``Accelerator``: DDP
by default, FSDP or DeepSpeed ZeRO when the accelerate config asks for them. Launched as one plain process, the loop
runs exactly as it always has, without accelerate (:class:`SingleProcess`), so single-device numbers never move.

The contrastive negatives of MCL come from every process through :func:`all_gather_with_grad`, whose backward
sums the gradients of every process, so a step on W processes × b examples has the gradient of one process on
W·b examples. The official code gathers with a plain ``all_gather`` and puts its own slice back so that slice keeps
its gradient (chongli17/CrossLingualAlignment, ``src/decoder_models.py``, ``cl_forward``): each process then
back-propagates only into its own vectors, and DDP's average makes the MCL gradient 1/W of the full-batch one
(docs/distributed.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch

from afp_cli.errors import AfpError

T = TypeVar("T")


def launched_world_size() -> int:
    """How many processes the launcher (torchrun, accelerate launch) started; 1 for a plain ``python``/``afp``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def sharding_engine_requested() -> bool:
    """An accelerate config asked for FSDP or DeepSpeed (they shard even on one process, e.g. ZeRO offload)."""
    return any(
        os.environ.get(name, "false").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def start_processes(device: str, grad_accumulation: int, find_unused_parameters: bool):
    """The processes of this run: :class:`SingleProcess` for a plain launch, else :class:`AcceleratedProcesses`.

    Args:
        device: ``train.device``; under several processes each takes its local GPU, so only auto, cpu and cuda fit.
        find_unused_parameters: DDP must expect weights without a gradient (MCL alone never reaches the layers
            above the pooling layer).
    """
    if launched_world_size() == 1 and not sharding_engine_requested():
        return SingleProcess()
    if device not in {"auto", "cpu", "cuda"}:
        raise AfpError(
            f"train.device={device} names one device, but {launched_world_size()} processes were "
            "launched: use auto, cuda or cpu (each process takes its own local GPU)"
        )
    return AcceleratedProcesses(
        device == "cpu" or not torch.cuda.is_available(), grad_accumulation, find_unused_parameters
    )


class SingleProcess:
    """One process, one device: every collective is the identity and the loop is the one afp always ran."""

    rank = 0
    world_size = 1
    is_main = True
    engine = "one process"
    shards_weights = False
    weights_dtype = None  # the recipe's dtype decides

    def __init__(self):
        self.device: str | None = None  # None: the recipe's train.device decides

    def prepare(self, entry: torch.nn.Module, optimizer, per_process_batch: int):
        return entry, optimizer

    offloads_optimizer = False

    def backward(self, loss: torch.Tensor, grad_accumulation: int, last_micro_batch: bool) -> None:
        (loss / grad_accumulation).backward()

    def clip_grad_norm(self, entry, parameters, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def no_sync(self, entry):
        return nullcontext()

    def mean(self, values: list[float]) -> list[float]:
        return values

    def sum(self, value: float) -> float:
        return value

    def gather_objects(self, value: Any) -> list[Any]:
        return [value]

    def on_main(self, function: Callable[[], T]) -> T:
        return function()

    def barrier(self) -> None:
        pass

    def unwrap(self, entry):
        return entry

    def save_engine_state(self, folder: Path) -> None:
        raise NotImplementedError("one process shards nothing")

    def load_engine_state(self, folder: Path) -> None:
        raise NotImplementedError("one process shards nothing")

    def full_state_dict(self, entry) -> dict | None:
        return None


class AcceleratedProcesses:
    """Several processes (or one under FSDP / DeepSpeed), through accelerate's ``Accelerator``."""

    def __init__(self, cpu: bool, grad_accumulation: int, find_unused_parameters: bool):
        from accelerate import Accelerator, DistributedDataParallelKwargs, DistributedType

        self.accelerator = Accelerator(
            cpu=cpu,
            gradient_accumulation_steps=grad_accumulation,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        )
        state = self.accelerator.state
        self.rank = state.process_index
        self.world_size = state.num_processes
        self.is_main = state.is_main_process
        self.device = str(self.accelerator.device)
        kind = self.accelerator.distributed_type
        self.shards_weights = kind in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        self.engine = {DistributedType.FSDP: "FSDP", DistributedType.DEEPSPEED: "DeepSpeed"}.get(kind, "DDP")
        self.weights_dtype = self._deepspeed_weights_dtype()
        if sharding_engine_requested() and not self.shards_weights:  # accelerate runs DDP on CPU processes
            raise AfpError(
                "the accelerate config asks for FSDP or DeepSpeed, but these processes run on the CPU, "
                "where accelerate runs DDP: launch on GPUs, or without that config for DDP"
            )

    def prepare(self, entry: torch.nn.Module, optimizer, per_process_batch: int):
        deepspeed = self.accelerator.state.deepspeed_plugin
        if deepspeed is not None:  # no dataloader goes through prepare(), so DeepSpeed is told the batch here
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = per_process_batch
        return self.accelerator.prepare(entry, optimizer)

    def _deepspeed_weights_dtype(self) -> torch.dtype | None:
        """The dtype DeepSpeed's bf16/fp16 mode gives the model's weights (it keeps fp32 masters in the optimizer).

        DeepSpeed (0.19.8, the version run) casts the parameters but not the buffers, and disables torch autocast
        inside its engine: an fp32 buffer that enters the activations (XGLM's sinusoidal positions) then meets bf16
        weights and the forward fails. Loading the model in that dtype casts buffers too, as the blanket
        ``module.bfloat16()`` of earlier DeepSpeed versions did, and as afp's LoRA runs on CUDA always load.
        """
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return None
        for section, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            if str(plugin.deepspeed_config.get(section, {}).get("enabled", False)).lower() == "true":
                return dtype
        return None

    @property
    def offloads_optimizer(self) -> bool:
        """DeepSpeed keeps the optimizer state in CPU memory (ZeRO-Offload): the optimizer must be one that steps
        there (DeepSpeed's CPU Adam), as DeepSpeed itself builds from an ``AdamW`` section of its config."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return False
        offload = plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer", {})
        return offload.get("device", "none") in ("cpu", "nvme")

    def backward(self, loss: torch.Tensor, grad_accumulation: int, last_micro_batch: bool) -> None:
        # DeepSpeed steps its optimizer inside backward when gradients are to be synchronised: only on a step's
        # last micro-batch (accelerate's optimizer wrapper also steps only then)
        self.accelerator.sync_gradients = last_micro_batch
        self.accelerator.backward(loss)  # divides by gradient_accumulation_steps (DeepSpeed: in its engine)

    def clip_grad_norm(self, entry, parameters, max_norm: float) -> torch.Tensor | None:
        if self.engine == "FSDP":  # FSDP clips its own flat shards: accelerate wants the wrapped module's list
            parameters = list(entry.parameters())
        norm = self.accelerator.clip_grad_norm_(parameters, max_norm)  # DeepSpeed: clipped in its engine's step
        return None if norm is None else torch.as_tensor(norm)  # DeepSpeed reports a float

    def no_sync(self, entry):
        """Skip the gradient all-reduce of all micro-batches but a step's last (DDP); others accumulate alike."""
        return self.accelerator.no_sync(entry) if self.engine == "DDP" else nullcontext()

    def mean(self, values: list[float]) -> list[float]:
        """The mean over processes of each value (every process gets the same numbers)."""
        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(summed)
        return (summed / self.world_size).tolist()

    def sum(self, value: float) -> float:
        return sum_over_processes(value)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def on_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the main process only and give every process its result, or its user error.

        Claiming the output folder, finding the checkpoint to resume: one process decides, and when it refuses,
        every process ends with the same one-line error instead of waiting for it forever.
        """
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [("ok", function())]
            except AfpError as error:  # its class too: a DiskFault stays one, and the hint its type carries
                outcome = [("error", (type(error), str(error)))]
            except BaseException as error:  # a bug: the others must not hang on the broadcast below
                outcome = [("crash", f"{type(error).__name__}: {error}")]
                torch.distributed.broadcast_object_list(outcome, src=0)
                raise
        torch.distributed.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if kind == "error":
            raise _rebuilt(*value)
        if kind == "crash":
            raise RuntimeError(f"the main process failed: {value}")
        return value

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def unwrap(self, entry):
        return self.accelerator.unwrap_model(entry)

    # FSDP and DeepSpeed shard weights and optimizer over the processes: each writes and reads its own shard
    # through accelerate (run on a GPU by bench/align_engines.py; the CPU tests cannot: docs/distributed.md)

    def save_engine_state(self, folder: Path) -> None:
        self.accelerator.save_state(str(folder))

    def load_engine_state(self, folder: Path) -> None:
        self.accelerator.load_state(str(folder))

    def full_state_dict(self, entry) -> dict | None:
        """The whole model's weights gathered on the main process (``model.`` prefix of the entry removed), or
        None where every process already holds them (DDP)."""
        if not self.shards_weights:
            return None
        gathered = self.accelerator.get_state_dict(entry)
        return {name.removeprefix("model."): value for name, value in gathered.items()} if self.is_main else None


def _rebuilt(error_type: type[AfpError], message: str) -> AfpError:
    """The main process's user error, of its own class (one whose constructor wants more than the message becomes a
    plain AfpError with the same line)."""
    try:
        return error_type(message)
    except TypeError:
        return AfpError(message)


def process_count() -> int:
    """The size of torch.distributed's process group; 1 when none is running (a plain single-process run)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def sum_over_processes(value: float) -> float:
    """The sum of ``value`` over every process (each process gets it)."""
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    summed = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(summed)
    return float(summed[0])


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every process's rows (rank order); backward sends each process the summed gradient of its rows.

    Every process computes a loss from all gathered rows, so the gradient of a process's own rows is the sum of
    what each process's loss gives them; the data-parallel engine then averages parameter gradients over the W
    processes, so a loss that is the same on every process gets exactly its one-process gradient.
    """

    @staticmethod
    def forward(context, tensor: torch.Tensor) -> torch.Tensor:
        world_size = torch.distributed.get_world_size()
        context.rank, context.rows = torch.distributed.get_rank(), tensor.shape[0]
        pieces = [torch.empty_like(tensor) for _ in range(world_size)]
        torch.distributed.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces)

    @staticmethod
    def backward(context, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.contiguous()
        torch.distributed.all_reduce(gradient)
        start = context.rank * context.rows
        return gradient[start : start + context.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` from every process, concatenated in rank order, differentiable (same row count per rank)."""
    return _AllGatherWithGrad.apply(tensor)
