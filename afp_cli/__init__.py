"""afp: Align after Pre-train — cross-lingual alignment of multilingual causal language models."""

__version__ = "0.1.0"
