"""Find a causal LM's transformer blocks and its backbone, whatever the architecture names them.

Below every other model module: LoRA targets, the early-stopped layer encoder and the scoring all need the blocks,
and none of them may import the loader for it (that made lora_targets.py and model.py import each other).
No torch import at module level.
"""

from __future__ import annotations


def decoder_layers(model):
    """The ModuleList of transformer blocks of a causal LM (plain or peft-wrapped), found by its length.

    Every supported architecture keeps its blocks in one ModuleList whose length is ``num_hidden_layers``
    (GPT-2/BLOOM ``transformer.h``, LLaMA/XGLM ``model.layers``, OPT ``model.decoder.layers``, ...).
    """
    import torch

    depth = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return module
    raise RuntimeError(f"no ModuleList of {depth} decoder layers found in {type(model).__name__}")


def backbone(model):
    """The transformer without its LM head (``model.model``, ``model.transformer``, ...), peft wrapping removed."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)
