"""`afp evaluate` on several processes (torchrun, accelerate launch): each scores a share of every cell's requests,
and every process ends with all the results, so the numbers are the ones one process gets.

lm-eval shards requests itself only for a model it loaded (``HFLM`` given a loaded instance, as afp's hf backend
gives it to share the base weights, runs as one process), and its sharding would not reproduce one process anyway:
documents are dealt out by stride and gathered rank after rank (another sample order, another float summation
order), uneven shards are padded with copies of a request whose extra answers land in the samples, and
per-item demonstrations drawn from one random stream come out different on each rank. So lm-eval here runs as one
process on every rank, building every request of a cell, and only the scoring is split, one level down: the
model's ``_loglikelihood_tokens`` and ``generate_until`` are replaced on the instance by a version that plans the
requests into *units*, scores the units of its own share, and gathers every unit's answers from every process.

A unit is what the model scores together in one process, so that scoring it alone gives the same floats:
- the batches lm-eval's HFLM forms (its own sort and chunking, reproduced with its ``Collator``; at batch size 1
  every request alone), for loglikelihoods and for generation (a batch's left padding decides its generations);
- for afp's ``LeanHFLM``, a family of requests sharing an encoded prefix (prefix_groups.py), which it batches
  within itself; its requests that take lm-eval's path are HFLM batches as above.
Units go to processes by size, largest first, each to the least loaded process: every process computes the same
plan from the same requests, so who scores what needs no message. ``--batch-size auto`` sizes batches per process
(the detection is lm-eval's) and is split in contiguous slices: its numbers are not guaranteed to be one process's.

Failures: every collective runs all processes through the same steps, and a step that fails on one process
(:meth:`Processes.gather`) makes every process raise: the failing one its own error, the others one line naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from afp_cli.errors import AfpError

T = TypeVar("T")
Units = list[list[int]]  # request indices scored together, per unit


def launched_processes() -> int:
    """How many processes the launcher started (torchrun and accelerate launch set WORLD_SIZE); 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the launch's main process (RANK 0, or not launched): the one that locks, writes and speaks."""
    return int(os.environ.get("RANK", "0")) == 0


class OtherProcessFailed(AfpError):
    """Another process of the launch failed: this one stops with that process's line."""


@dataclass(frozen=True)
class _Outcome:
    """One process's result of a step, or its failure as something every process can raise."""

    value: Any = None
    error: tuple[type, str] | None = None  # an AfpError subclass and its line
    crash: str | None = None  # a bug's "Type: message"

    def result(self, rank: int) -> Any:
        if self.error is not None:
            return _rebuilt(*self.error)
        if self.crash is not None:
            return OtherProcessFailed(f"process {rank} of the launch failed: {self.crash}")
        return None


def _attempt(function: Callable[[], T]) -> tuple[_Outcome, BaseException | None]:
    try:
        return _Outcome(value=function()), None
    except AfpError as error:
        return _Outcome(error=(type(error), str(error))), error
    except Exception as error:
        return _Outcome(crash=f"{type(error).__name__}: {error}"), error


def _rebuilt(error_type: type, message: str) -> AfpError:
    try:
        return error_type(message)
    except TypeError:  # a class whose constructor wants more than the line
        return AfpError(message)


@dataclass
class Processes:
    """The processes of one `afp evaluate` (or language-rate) run; rank 0 is the one that writes."""

    rank: int = 0
    world_size: int = 1
    requests: list[int] = field(default_factory=lambda: [0])  # requests each process scored in this invocation

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, function: Callable[[], T]) -> list[T]:
        """Run ``function`` on every process; every process gets every process's value, in rank order. Where
        one fails, every process raises: the failing one its own exception, the others its line."""
        outcome, error = _attempt(function)
        if self.world_size == 1:
            if error is not None:
                raise error
            return [outcome.value]
        import torch.distributed as dist

        outcomes: list[Any] = [None] * self.world_size
        dist.all_gather_object(outcomes, outcome)
        if error is not None:
            raise error
        for rank, other in enumerate(outcomes):
            failure = other.result(rank)
            if failure is not None:
                raise failure
        return [other.value for other in outcomes]

    def on_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the main process only (claiming the folder, writing a cell); every process gets its
        value, or raises its error."""
        return self.gather(function if self.is_main else (lambda: None))[0]  # type: ignore[return-value]


def start_processes(device: str, backend: str) -> Processes:
    """One :class:`Processes` for this launch: a torch.distributed group (gloo: only Python objects travel, and it
    spans nodes) when the launcher started several, each process on its local GPU where it runs on CUDA."""
    world_size = launched_processes()
    if world_size == 1:
        return Processes()
    if backend != "hf":
        raise AfpError(
            f"--backend {backend} under {world_size} launched processes: only the hf backend splits requests over "
            "processes; launch one process and let the backend parallelise (vLLM: --model-args "
            "data_parallel_size=N,tensor_parallel_size=M)"
        )
    if device not in {"auto", "cpu", "cuda"}:
        raise AfpError(
            f"--device {device} names one device, but {world_size} processes were launched: use auto, cuda or cpu "
            "(each process takes its own local GPU)"
        )
    import torch
    import torch.distributed as dist

    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" then means this process's GPU
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank != 0:  # one copy of lm-eval's log: the main process's
        logging.getLogger("lm-eval").setLevel(logging.ERROR)
    return Processes(rank=rank, world_size=dist.get_world_size(), requests=[0] * dist.get_world_size())


def stop_processes(processes: Processes) -> None:
    if processes.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- splitting the requests


@contextlib.contextmanager
def split_scoring(lm: Any, processes: Processes) -> Iterator[None]:
    """Within the body, ``lm`` scores loglikelihood and generation requests split over ``processes`` (the
    instance's methods shadowed, so HFLM and its subclasses alike); one process scores everything as before and
    only counts."""
    names = ("_loglikelihood_tokens", "generate_until", "loglikelihood_rolling")
    originals = {name: getattr(lm, name) for name in names}
    rolling = [False]

    def split(name: str, requests, units: Callable[[Any, Sequence], Units]) -> list:
        return _split(
            processes,
            requests,
            lambda: units(lm, requests),
            lambda part: originals[name](part, disable_tqdm=True),
            one_call=not isinstance(lm.batch_size, int),
        )

    def loglikelihood_tokens(requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if rolling[0]:  # lm-eval's rolling windows: batched across documents by HFLM, scored whole everywhere
            return originals["_loglikelihood_tokens"](requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        return split("_loglikelihood_tokens", requests, loglikelihood_units)

    def generate_until(requests, disable_tqdm: bool = False):
        return split("generate_until", requests, generation_units)

    def loglikelihood_rolling(requests, disable_tqdm: bool = False):
        rolling[0] = True
        try:
            return originals["loglikelihood_rolling"](requests, disable_tqdm=disable_tqdm)
        finally:
            rolling[0] = False

    replaced = {
        "_loglikelihood_tokens": loglikelihood_tokens,
        "generate_until": generate_until,
        "loglikelihood_rolling": loglikelihood_rolling,
    }
    for name, function in replaced.items():
        setattr(lm, name, function)
    try:
        yield
    finally:
        for name in names:
            with contextlib.suppress(AttributeError):
                delattr(lm, name)  # the class's methods again


def _split(
    processes: Processes, requests: Sequence, plan: Callable[[], Units], score: Callable[[list], list], one_call: bool
) -> list:
    """Plan the units, score this process's, one model call each (``one_call``: its whole share in one, for a batch size
    the model detects itself), and return every request's answer in request order."""
    if processes.world_size == 1:  # as without afp's split: one call, no plan
        processes.requests[0] += len(requests)
        return score(list(requests))
    units = plan()
    shares = assign(units, processes.world_size)
    for rank, share in enumerate(shares):
        processes.requests[rank] += sum(len(units[unit]) for unit in share)

    def mine() -> dict[int, Any]:
        answers: dict[int, Any] = {}
        calls = [units[unit] for unit in shares[processes.rank]]
        if one_call:
            calls = [sorted(index for indices in calls for index in indices)]
        for indices in calls:
            if not indices:
                continue
            for index, answer in zip(indices, score([requests[index] for index in indices]), strict=True):
                answers[index] = answer
        return answers

    merged: dict[int, Any] = {}
    for answers in processes.gather(mine):
        merged.update(answers)
    return [merged[index] for index in range(len(requests))]


def assign(units: Units, world_size: int) -> list[list[int]]:
    """Unit numbers per process: largest unit first, each to the process with the fewest requests so far (the
    lowest rank on a tie); each process's units in plan order. The same on every process."""
    loads = [0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for unit in sorted(range(len(units)), key=lambda number: (-len(units[number]), number)):
        rank = min(range(world_size), key=lambda candidate: (loads[candidate], candidate))
        shares[rank].append(unit)
        loads[rank] += len(units[unit])
    return [sorted(share) for share in shares]


# ------------------------------------------------------------------------------------------- units


def loglikelihood_units(lm: Any, requests: Sequence) -> Units:
    """Units of ``_loglikelihood_tokens`` requests ``(key, context ids, continuation ids)``: LeanHFLM's prefix
    families for the requests it scores itself, HFLM batches for the rest."""
    from afp_cli.evaluation.lean_scoring import LeanHFLM
    from afp_cli.evaluation.prefix_groups import group_requests

    indices = list(range(len(requests)))
    if not isinstance(lm, LeanHFLM) or not lm.lean_support().supported:
        return _hflm_loglikelihood_batches(lm, requests, indices)
    lean = [index for index in indices if lm.fits(requests[index][1], requests[index][2])]
    rest = [index for index in indices if index not in set(lean)]
    families = group_requests([tuple(requests[index][1]) for index in lean])
    units = [[lean[position] for item in family.items for position in item.requests] for family in families]
    return units + _hflm_loglikelihood_batches(lm, requests, rest)


def _hflm_loglikelihood_batches(lm: Any, requests: Sequence, indices: list[int]) -> Units:
    """HFLM's batches of ``requests[indices]`` as its ``_loglikelihood_tokens`` forms them: sorted longest first,
    requests sharing context + continuation[:-1] scored by one representative (its logits cache), chunks of the
    batch size. A chunk's representatives bring the requests they stand for."""
    from lm_eval.models.utils import Collator

    if not indices:
        return []
    size = getattr(lm, "batch_size", 1)
    if not isinstance(size, int):
        return [[index] for index in indices]  # "auto": each process sizes the batches of its share itself
    tagged = [(index, requests[index][1], requests[index][2]) for index in indices]
    by_context = getattr(lm, "backend", "causal") == "causal" and getattr(lm, "logits_cache", True)
    collator = Collator(
        tagged,
        sort_fn=lambda request: (-len(request[1] + request[2]), tuple(request[1] + request[2])),
        group_by="contexts" if by_context else None,
        group_fn=lambda request: request[-2] + request[-1][:-1],
    )
    members: dict[tuple[int, ...], list[int]] = {}
    for index, context, continuation in tagged:
        members.setdefault(tuple(context + continuation[:-1]), []).append(index)
    units = []
    for chunk in collator.get_batched(n=size):
        if by_context:
            units.append(
                [index for _, context, continuation in chunk for index in members[tuple(context + continuation[:-1])]]
            )
        else:
            units.append([index for index, _, _ in chunk])
    return units


def generation_units(lm: Any, requests: Sequence) -> Units:
    """HFLM's generation batches: requests grouped by generation arguments, sorted longest context first, chunks
    of the batch size (a batch is left-padded to its longest prompt, which can move a greedy choice)."""
    from lm_eval.models.utils import Collator

    size = getattr(lm, "batch_size", 1)
    if not isinstance(size, int):
        return [[index] for index in range(len(requests))]
    tagged = [(request.args[0], request.args[1], index) for index, request in enumerate(requests)]
    collator = Collator(
        tagged,
        sort_fn=lambda request: (-len(lm.tok_encode(request[0])), request[0]),
        group_by="gen_kwargs",
        group_fn=lambda request: request[1],
    )
    return [[index for _, _, index in chunk] for chunk in collator.get_batched(n=size)]
