"""The model and how it is scored: loading, blocks, LoRA targets, adapters' base check, variants, representations,
pooling, causal-LM scoring and the tiny builders. No torch import here: the CLI imports these modules lazily."""
