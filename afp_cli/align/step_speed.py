"""The model side of afp's two step-speed switches: compiled decoder blocks (``train.compile``) and the start-up
check that the model keeps packed texts apart (``data.packing``).

Compilation is regional, as PyTorch's recipe for transformers advises: each decoder block's ``forward`` goes through
torch.compile, with its LoRA layers inside. The blocks of a model are the same code with different weights, so they
share one compiled graph per kind of input (compile time is that of one block, not of the whole model). Only
``forward`` is replaced, not the module call: the hooks that stop MCL's pass at the pooling layer
(afp_cli/model/representations.py) run eagerly around it, and parameter names (checkpoints, adapters) do not change.
The compiled code runs only in training passes (grad on, training mode), including the recomputation of gradient
checkpointing; held-out evaluation and generation with the returned model run eagerly, so they give the numbers
they gave before and compile nothing. The embeddings, the answer-only LM head and the losses stay eager too (the
LM head's input has a data-dependent size).
"""

from __future__ import annotations

import logging

import torch
from rich.console import Console

from afp_cli.data.packing import pack
from afp_cli.errors import AfpError
from afp_cli.model.blocks import backbone, decoder_layers

# What a packed row may differ from the same texts run apart, relative to the hidden state's size: rounding only.
# Measured (transformers 5.24, random weights): 1e-7-6e-7 in fp32 and up to 0.016 in bf16 (30 layers) where
# packing works; XGLM 0.08, BLOOM 0.05, OPT 0.87 where it does not (trained weights differ more: their attention
# and positions matter more than a random model's).
PACKING_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2.5e-2, torch.float16: 1e-2}


def compile_blocks(model, backend: str = "inductor") -> int:
    """Compile every decoder block's forward for training passes (see the module docstring); returns the count.

    Args:
        backend: torch.compile's backend; tests use ``aot_eager`` (the same graphs, no code generation).
    """
    blocks = decoder_layers(model)
    for block in blocks:
        # automatic dynamic shapes (dynamic=None): a second shape makes the varying sizes symbolic, so a run
        # compiles a few graphs, not one per batch shape
        compiled = torch.compile(block.forward, backend=backend, dynamic=None)
        block.forward = _training_only(block, compiled, block.forward)
    return len(blocks)


def _training_only(block, compiled, eager):
    def forward(*args, **kwargs):
        if block.training and torch.is_grad_enabled():
            return compiled(*args, **kwargs)
        return eager(*args, **kwargs)

    return forward


def check_compile(device: str, processes) -> None:
    """One line instead of a traceback later: engines that shard weights, and a CPU without a C++ compiler."""
    if processes.shards_weights:
        raise AfpError(
            f"train.compile: true is not supported with {processes.engine}, which shards the weights: "
            "use train.compile=false"
        )
    if device == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # another torch layout: let inductor report it
            return
        try:
            get_cpp_compiler()
        except Exception as error:  # inductor's InvalidCxxCompiler; its message lists what it looked for
            raise AfpError(
                f"train.compile: true on the CPU needs a C++ compiler (g++ or clang++, or $CXX): "
                f"{str(error).strip().splitlines()[0]}"
            ) from None


@torch.no_grad()
def packing_difference(model) -> float:
    """How far texts packed in one row are from the same texts run one by one (relative, per token; 0 = identical).

    Two short texts go through the whole backbone apart and then packed (afp_cli/data/packing.py); a model whose
    attention and positions follow the packed ``position_ids`` gives the same hidden states up to rounding. XGLM,
    OPT and BLOOM (transformers 5.24) do not: they count positions from the row's start or through the padding mask.
    """
    encoder = backbone(model)
    device = next(model.parameters()).device
    vocabulary = model.config.vocab_size
    # a long first text: a model that counts positions from the row's start, or lets the second text attend to
    # the first, moves the second text's hidden states far
    texts = [[(7 * step + 3) % vocabulary for step in range(24)], [(13 * step + 5) % vocabulary for step in range(5)]]
    was_training = model.training
    model.eval()
    try:
        alone = [
            encoder(input_ids=torch.tensor([text], device=device), use_cache=False).last_hidden_state[0].float()
            for text in texts
        ]
        ids, layout = pack(texts, 0, max_width=sum(len(text) for text in texts))  # one row: 24, then 5 tokens
        layout = layout.to(device)
        packed = encoder(
            input_ids=ids.to(device), attention_mask=None, position_ids=layout.position_ids, use_cache=False
        ).last_hidden_state.float()
    finally:
        model.train(was_training)
    hidden, _ = layout.unpack(packed)
    differences = [
        float(((hidden[index, : len(text)] - single).norm(dim=-1) / single.norm(dim=-1).clamp_min(1e-6)).max())
        for index, (text, single) in enumerate(zip(texts, alone))
    ]
    return max(differences)


def check_packing(model, console: Console) -> bool:
    """Whether the model keeps packed texts apart (:func:`packing_difference` within rounding); warns when not."""
    _quiet_packed_rows_warning()
    dtype = next(model.parameters()).dtype
    tolerance = PACKING_TOLERANCE.get(dtype, 2.5e-2)
    architecture = model.config.model_type
    try:
        difference = packing_difference(model)
    except (TypeError, ValueError, RuntimeError) as error:  # a model whose forward takes no position_ids
        reason = f"its forward refused packed rows ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    else:
        if difference <= tolerance:
            return True
        reason = (
            f"its hidden states for packed texts differ from the texts run apart by {difference:.2g} "
            f"(relative; rounding allows {tolerance:g})"
        )
    console.print(
        f"[yellow]warning:[/] data.packing: {architecture} does not keep packed texts apart: {reason}. "
        "Training on padded batches.",
        highlight=False,
    )
    return False


def packs_batches(model, config, console: Console) -> bool:
    """``data.packing`` as it applies to ``model``: on where the model keeps packed texts apart (warned when not).

    Asked once, at set-up; the run carries the answer (afp_cli/align/train.py:Run.packs) to every micro-batch. The
    recipe keeps what was asked, so a resume compares equal, and the same recipe packs on a model that allows it.
    """
    if not config.data.packing:
        return False
    return check_packing(model, console)


class _PackedRowsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "recommend passing in an `attention_mask`" not in record.getMessage()


def _quiet_packed_rows_warning() -> None:
    """Packed rows have no padding mask by design: transformers' advice to pass one (GPT-2 & co.) would mislead."""
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(existing, _PackedRowsFilter) for existing in logger.filters):
        logger.addFilter(_PackedRowsFilter())
