"""Which precision afp computes in: bf16 where the hardware runs it fast, fp32 elsewhere — decided here only.

Two callers ask. Training (``train.precision`` of `afp align`): ``auto`` becomes bf16 *autocast* on CUDA and on a
CPU whose torch reports AVX512-BF16 or AMX (oneDNN then runs bf16 matmuls in hardware), fp32 elsewhere. Autocast,
not a bf16 model: the LoRA weights, the optimizer state and the losses stay fp32; only the matmuls' inputs are
rounded to bf16. Scoring (``--dtype auto`` of `afp evaluate` / `afp analyze`): the weights' dtype, bfloat16 on CUDA;
on a CPU the choice below, made by measurement (bench/RESULTS.md, "bf16 on CPUs that have it").

Without the instructions a CPU still computes bf16 (torch emulates it), only slowly: asked for explicitly it is
allowed, with one line saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp32")

# Scoring on a CPU keeps float32 weights under --dtype auto, even with fast bf16. Measured (bench/eval_precision.py,
# bench/RESULTS.md): bfloat16 weights scored SmolLM2-135M's 0-shot PAWS-X/XCOPA zh 1.6-2.4x faster, but moved
# per-request loglikelihoods by up to 2.0 nats (mean 0.36) and changed the chosen answer of 5 of 100 items — not
# the "close" a default may cost. Flip this when a measurement says otherwise (bf16 autocast over fp32 weights is
# the candidate: it keeps norms and log-probabilities in fp32).
CPU_SCORING_IN_BF16 = False
SCORING_AUTO_HELP = (
    "auto (bfloat16 on CUDA; float32 on a CPU, even one with AVX512-BF16/AMX: bfloat16 weights scored 1.6-2.4x "
    "faster but changed 5 of 100 answers, bench/RESULTS.md)"
)


def cpu_has_fast_bf16() -> bool:
    """True when torch reports AVX512-BF16 or AMX tiles on this CPU.

    ``torch.backends.mkldnn``'s bf16 check is not used: it is true on any AVX512 CPU, where bf16 is emulated and
    slower than fp32. The ``torch.cpu`` checks are private (underscored) but have been there since torch 2.3; a
    torch without them reports no support, which costs speed, never correctness.
    """
    import torch

    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and bool(check()) for check in checks)


def _device_type(device: str) -> str:
    return device.split(":", 1)[0]


@dataclass(frozen=True)
class Precision:
    """The resolved training precision: ``bf16`` (autocast) or ``fp32``, and the one line that explains it, if any."""

    name: str
    device: str
    note: str | None = None

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def autocast(self) -> Callable[[], AbstractContextManager]:
        """A factory of the context every forward pass runs in (a fresh context each call)."""
        if not self.bf16:
            return nullcontext
        import torch

        device_type = _device_type(self.device)
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def resolve_precision(requested: str, device: str) -> Precision:
    """``auto`` → bf16 on CUDA and on CPUs with fast bf16, fp32 elsewhere; ``bf16`` / ``fp32`` as asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: one of {', '.join(PRECISIONS)}")
    kind = _device_type(device)
    if requested == "fp32":
        return Precision("fp32", device)
    if kind == "cuda":
        return Precision("bf16", device)
    fast = kind == "cpu" and cpu_has_fast_bf16()
    if requested == "bf16":
        slow = "this CPU has no AVX512-BF16/AMX: bf16 is emulated, slow (not wrong)"
        return Precision("bf16", device, slow if kind == "cpu" and not fast else None)
    if fast:
        return Precision("bf16", device)
    why = "this CPU has no AVX512-BF16/AMX" if kind == "cpu" else f"bf16 autocast is not used on {kind}"
    return Precision("fp32", device, f"{why}: precision auto → fp32")


def scoring_dtype_name(device: str) -> str:
    """What ``--dtype auto`` loads evaluation/analysis weights in: ``bfloat16`` or ``float32``."""
    kind = _device_type(device)
    if kind == "cuda":
        return "bfloat16"
    if kind == "cpu" and CPU_SCORING_IN_BF16 and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def training_weights_dtype_name(device: str, lora: bool) -> str:
    """What ``model.dtype: auto`` loads `afp align`'s base model in: bfloat16 for LoRA on CUDA (the frozen base
    dominates memory), else float32 — on a CPU bf16 comes from autocast, so a frozen fp32 base keeps its exact
    fp32 path under ``train.precision: fp32``."""
    return "bfloat16" if lora and _device_type(device) == "cuda" else "float32"
