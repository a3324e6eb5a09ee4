"""The schema of an `afp align` recipe: one dataclass a section, and how a recipe file becomes an ``AlignConfig``.

Every tunable is a dataclass field with a default and a help text (``metadata["help"]``); ``__post_init__``
rejects bad values by name. A recipe may set any subset; what it leaves out keeps the paper's defaults.

Reading YAML with line numbers, ``key=value`` overrides and typed coercion is generic and lives in
afp_cli/typed_yaml.py. What stays here after the schema is the little that knows align's sections: the section
table, recipe-relative paths (``load_config``), the top level (``build_config``), recipe.yaml
(``config_to_yaml``) and the reference docs/align.md embeds (``reference_markdown``). It stays next to the
schema rather than in a module of its own because it is short and every command that loads a recipe imports it
from here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from afp_cli.errors import AfpError
from afp_cli.model.lora_targets import TARGET_PRESETS
from afp_cli.model.pooling import SPEC_HELP, Pooling, parse_pooling
from afp_cli.model.precision import PRECISIONS
from afp_cli.typed_yaml import (
    ConfigValueError,
    Located,
    build_section,
    coerce,
    parse_override,
    read_recipe,
    set_dotted,
    suggest,
)


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigValueError(key, message)


# Full fine-tuning: the official script's rate (script/run_sup_example.sh). LoRA: afp's choice, 10x higher, the
# usual LoRA range (the low-rank update starts at zero and needs larger steps to move as far).
DEFAULT_FULL_LR = 1e-5
DEFAULT_LORA_LR = 1e-4


@dataclass
class ModelConfig:
    name_or_path: str | None = _help(
        "Hub name or local path of a pre-trained causal LM (e.g. facebook/xglm-564M).", None
    )
    architecture: dict[str, Any] | None = _help(
        "Build a randomly initialised model from this config instead ({model_type: llama, hidden_size: 64, ...}); "
        "used by the demo and tests.",
        None,
    )
    tokenizer: str | None = _help(
        "Tokenizer name or path; defaults to name_or_path. With `architecture` and no "
        "tokenizer, a byte-level BPE is trained on the training texts.",
        None,
    )
    tokenizer_vocab_size: int = _help("Vocabulary size of the tokenizer trained in-process (architecture only).", 1000)
    dtype: str = _help(
        "Weights dtype: auto (bfloat16 on CUDA with LoRA, else float32), float32, bfloat16, float16.", "auto"
    )
    trust_remote_code: bool = _help("Allow model code from the hub (only for models you trust).", False)

    def __post_init__(self) -> None:
        _require(
            (self.name_or_path is None) != (self.architecture is None),
            "name_or_path",
            "or 'model.architecture' must be set, not both and not neither",
        )
        if self.architecture is not None:
            _require(
                isinstance(self.architecture, dict) and "model_type" in self.architecture,
                "architecture",
                "must be a mapping with a model_type (e.g. {model_type: llama, hidden_size: 64})",
            )
        _require(
            self.dtype in {"auto", "float32", "bfloat16", "float16"},
            "dtype",
            "must be auto, float32, bfloat16 or float16",
        )
        _require(
            self.tokenizer_vocab_size >= 300, "tokenizer_vocab_size", "must be at least 300 (256 bytes + specials)"
        )


@dataclass
class LoRAConfig:
    enabled: bool = _help("Train LoRA adapters (true) or all weights (false, as the official code does).", True)
    r: int = _help("LoRA rank.", 16)
    alpha: int = _help("LoRA scaling numerator; usually 2 × r.", 32)
    dropout: float = _help("Dropout on the LoRA input.", 0.05)
    targets: str = _help(
        "What to adapt: auto (afp's default: embeddings+all-linear), attention, all-linear, embeddings+attention, "
        "embeddings+all-linear. MCL pools a low layer, so it needs the input embeddings adapted "
        "(docs/method_fidelity.md).",
        "auto",
    )
    target_modules: list[str] | str | None = _help(
        "Explicit PEFT module names (or 'all-linear'); when set, they win over `targets`.", None
    )

    def __post_init__(self) -> None:
        _require(self.targets in TARGET_PRESETS, "targets", f"must be one of {', '.join(TARGET_PRESETS)}")
        _require(self.r >= 1, "r", "must be >= 1")
        _require(self.alpha > 0, "alpha", "must be > 0")
        _require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")


@dataclass
class MCLConfig:
    weight: float = _help("Weight of the multilingual contrastive loss (0 disables MCL: the CIT-only ablation).", 1.0)
    temperature: float = _help("InfoNCE temperature τ (cosine similarity / τ).", 0.05)
    pooling: str = _help(f"Sentence vector: {SPEC_HELP} Official default last-1 (docs/align.md).", "last-1")
    pooling_resolved: str | None = _help(
        "Written by afp when pooling is auto: the layer it measured (last-N), so that a resume, or a copy of the "
        "run's recipe.yaml, pools there without measuring again. Leave it out otherwise.",
        None,
    )
    symmetric: bool = _help("Average the loss of both directions (x→y and y→x); the official loss is x→y only.", False)
    hard_negative_weight: float = _help("Logit bonus added to each pair's own hard negative (SimCSE style).", 0.0)
    gather_negatives: bool = _help(
        "With several processes, contrast each pair with the pairs of every process (the global batch), through "
        "an all-gather that carries the gradient (the official one does not: docs/distributed.md); false: only the "
        "pairs of the same process.",
        True,
    )

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "weight", "must be >= 0")
        _require(self.temperature > 0, "temperature", "must be > 0")
        try:
            _ = self.requested_pooling  # parsed once, here
        except ValueError as error:
            raise ConfigValueError("pooling", str(error)) from None
        if self.pooling_resolved is not None:
            self.resolve_pooling(self.pooling_resolved)

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @functools.cached_property
    def requested_pooling(self) -> Pooling:
        """``pooling`` parsed (once: not a dataclass field, so recipe.yaml and ``asdict`` stay as they were)."""
        return parse_pooling(self.pooling)

    @property
    def pooled(self) -> Pooling:
        """The pooling MCL uses: the recipe's, or for auto the layer measured (still auto before it is measured)."""
        return self.__dict__.get("_resolved_pooling") or self.requested_pooling

    def resolve_pooling(self, spec: str) -> None:
        """Fix auto's layer (measured at start-up, or read back from the run's recipe.yaml on a resume)."""
        try:
            resolved = parse_pooling(spec)
        except ValueError as error:
            raise ConfigValueError("pooling_resolved", str(error)) from None
        requested = self.requested_pooling
        if not requested.auto:
            raise ConfigValueError("pooling_resolved", f"is for pooling: auto, but pooling is {self.pooling}")
        if resolved.auto or resolved.layer is None or resolved.method != requested.method:
            raise ConfigValueError("pooling_resolved", f"must be {requested.method}-N (a layer), got {spec}")
        self.pooling_resolved = spec
        self.__dict__["_resolved_pooling"] = resolved


@dataclass
class CITConfig:
    weight: float = _help(
        "Weight of the cross-lingual instruction-tuning (causal LM) loss (0: MCL-only ablation).", 1.5
    )
    learn_prompt: bool = _help("Also learn the prompt tokens (false: only the answer is a target).", False)
    append_eos: bool = _help("Append EOS to every answer so the model learns to stop.", True)

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "weight", "must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass
class DataConfig:
    train_file: str | None = _help(
        "AFP JSONL: sent0, sent1, [hard_neg], clm_text, clm_prompt_len (official format). "
        "Relative paths are resolved against the recipe's folder.",
        None,
    )
    build: dict[str, Any] | list[dict[str, Any]] | None = _help(
        "Build the training file instead: one part or a list of parts, each with the options of `afp data` (mode, "
        "languages, instructions or parallel as a path or hf:// reference, cross_prob, change_prob, repeat, seed, "
        "templates), mixed and shuffled by train.seed; built once and cached in $AFP_CACHE_DIR (default "
        "~/.cache/afp). See docs/data.md.",
        None,
    )
    held_out: int = _help("Number of training examples held out for evaluation (taken by the seeded shuffle).", 64)
    max_length: int = _help(
        "Maximum tokens per sentence (MCL) and per instruction text (CIT); longer ones are truncated and counted.", 512
    )
    packing: bool = _help(
        "Padding-free training batches: the texts of a micro-batch share rows (position ids restarting per text, "
        "attention kept within each text), the same losses as padded rows with less padding computed. Checked on "
        "the model at start-up: an architecture that mixes packed texts (XGLM, OPT, BLOOM) trains padded, with a "
        "warning. Held-out evaluation stays padded. Off by default, though faster (bench/RESULTS.md): with LoRA "
        "dropout the random draws differ from padded rows, so existing recipes would change their numbers.",
        False,
    )

    def __post_init__(self) -> None:
        _require(
            (self.train_file is None) != (self.build is None),
            "train_file",
            "or 'data.build' must be set, not both and not neither",
        )
        if self.build is not None:
            self.mixture()  # validate now, so a bad value is reported with the recipe's file and line
        _require(self.held_out >= 0, "held_out", "must be >= 0")
        _require(self.max_length >= 8, "max_length", "must be >= 8")

    def mixture(self, seed: int = 0):
        """The `afp data` mixture (a Mixture) that ``build`` describes, mixed by ``seed``; parts may set their own."""
        from afp_cli.data.mixture_config import Mixture

        try:
            return Mixture.from_mappings(self.build, seed)
        except AfpError as error:
            raise ConfigValueError("build", str(error).removeprefix("data.build: ")) from None


@dataclass
class TrainConfig:
    max_steps: int = _help("Optimizer steps.", 5000)
    batch_size: int = _help(
        "Examples per micro-batch (each gives one MCL pair and one CIT text), over all processes: "
        "launched on N processes, each takes batch_size / N of them (docs/distributed.md).",
        2,
    )
    grad_accumulation: int = _help("Micro-batches per optimizer step.", 1)
    lr: float | None = _help(
        "Peak learning rate; null: 1e-4 with LoRA, 1e-5 for full fine-tuning (the official "
        "rate). The resolved value is printed and written to recipe.yaml.",
        None,
    )
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    scheduler: str = _help("Learning-rate schedule after warmup: cosine, linear or constant.", "cosine")
    warmup_ratio: float = _help("Share of steps with linear warmup.", 0.03)
    max_grad_norm: float = _help("Gradient clipping norm (0 disables).", 1.0)
    seed: int = _help("Fixes data order, held-out split, initialisation and dropout.", 42)
    device: str = _help("auto (CUDA when present), cpu, cuda, cuda:1, ...", "auto")
    precision: str = _help(
        "auto, bf16 or fp32. auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16 or AMX, fp32 on other CPUs "
        "(with a line saying why). bf16 autocast keeps the LoRA weights, optimizer state and losses in fp32. The "
        "resolved value is printed and written to summary.json; recipe.yaml keeps what was asked.",
        "auto",
    )
    tf32: bool = _help("Allow TF32 matmuls on CUDA.", True)
    cpu_threads: int | None = _help(
        "torch threads on CPU (null: torch's default). 1 is fastest for tiny models and on busy machines.", None
    )
    gradient_checkpointing: bool = _help("Recompute activations in backward to save memory.", False)
    compile: bool = _help(
        "torch.compile each decoder block (LoRA inside) for the training passes, batch widths rounded up to few "
        "sizes. The first step compiles (a minute or more on a CPU, which needs a C++ compiler). On a CPU it is "
        "slower than eager for SmolLM2-135M (0.64x the steps/s once compiled: bench/RESULTS.md); meant for CUDA, "
        "where the step is bound by kernel launches, but not measured there yet. Off by default: not faster where "
        "measured, and rounding and dropout draws differ from eager. Not with FSDP/DeepSpeed.",
        False,
    )
    log_every: int = _help("Write metrics.jsonl and update the progress line every N steps.", 10)
    eval_every: int = _help("Evaluate on the held-out slice every N steps (0: only before and after).", 500)
    save_every: int = _help("Write a checkpoint every N steps (0: only at the end).", 500)
    keep_checkpoints: int = _help("How many recent checkpoints to keep.", 2)
    tensorboard: bool = _help("Also write TensorBoard events to <output_dir>/tensorboard.", False)

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accumulation", "log_every"):
            _require(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("eval_every", "save_every"):
            _require(getattr(self, key) >= 0, key, "must be >= 0")
        _require(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", "must be >= 1")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        _require(self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), "lr", "must be a positive number")
        _require(self.scheduler in {"cosine", "linear", "constant"}, "scheduler", "must be cosine, linear or constant")
        _require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        _require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        _require(self.precision in PRECISIONS, "precision", f"must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")


@dataclass
class AlignConfig:
    model: ModelConfig
    data: DataConfig
    output_dir: str = _help("Where the adapter, checkpoints and metrics go.", "runs/afp")
    lora: LoRAConfig = _help("LoRA settings.", None)
    mcl: MCLConfig = _help("Multilingual contrastive learning.", None)
    cit: CITConfig = _help("Cross-lingual instruction tuning.", None)
    train: TrainConfig = _help("Optimisation and loop.", None)
    merge: bool = _help("Also write the base model with the adapter merged in, to <output_dir>/merged.", False)

    def __post_init__(self) -> None:
        self.lora = self.lora or LoRAConfig()
        self.mcl = self.mcl or MCLConfig()
        self.cit = self.cit or CITConfig()
        self.train = self.train or TrainConfig()
        if self.train.lr is None:
            self.train.lr = DEFAULT_LORA_LR if self.lora.enabled else DEFAULT_FULL_LR
        _require(
            self.mcl.enabled or self.cit.enabled,
            "mcl.weight",
            "'mcl.weight' and 'cit.weight' are both 0: nothing to train",
        )
        _require(
            not self.mcl.enabled or self.train.batch_size >= 2,
            "train.batch_size",
            "'train.batch_size' must be >= 2 when MCL is on: in-batch negatives need at least two pairs",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- loading

_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "lora": LoRAConfig,
    "mcl": MCLConfig,
    "cit": CITConfig,
    "data": DataConfig,
    "train": TrainConfig,
}


def load_config(recipe: str | Path, overrides: list[str] | None = None) -> AlignConfig:
    """Read a recipe, apply command-line overrides, and build a validated :class:`AlignConfig`.

    Relative ``data.train_file`` paths are resolved against the recipe's folder, so a recipe works from anywhere.
    """
    path = Path(recipe)
    tree, lines = read_recipe(path)
    located = Located(str(path), lines)
    override_keys = set()
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
        override_keys.add(key)

    def where(dotted: str) -> str:
        return "command line" if dotted in override_keys else located.where(dotted)

    _resolve_recipe_paths(tree, path.parent, override_keys)
    return build_config(tree, where)


# Paths in a recipe are relative to the recipe's folder; on the command line, to the current folder.
_RECIPE_PATHS = ("data.train_file", "data.build.instructions", "data.build.parallel")


def _resolve_recipe_paths(tree: dict[str, Any], folder: Path, override_keys: set[str]) -> None:
    from afp_cli.data.hub import is_hub_reference

    for dotted in _RECIPE_PATHS:
        *parents, leaf = dotted.split(".")
        nodes = [tree]
        for part in parents:
            nodes = [node.get(part) if isinstance(node, dict) else None for node in nodes]
            # data.build may be a list of parts: each part's paths resolve alike
            nodes = [item for node in nodes for item in (node if isinstance(node, list) else [node])]
        if dotted in override_keys:
            continue
        for node in nodes:
            value = node.get(leaf) if isinstance(node, dict) else None
            if isinstance(value, str) and not is_hub_reference(value) and not Path(value).expanduser().is_absolute():
                node[leaf] = str((folder / value).resolve())


def build_config(tree: dict[str, Any], where=lambda key: "recipe") -> AlignConfig:
    top_fields = {f.name: f for f in dataclasses.fields(AlignConfig)}
    sections: dict[str, Any] = {}
    for key, value in tree.items():
        if key not in top_fields:
            raise AfpError(f"{where(key)}: unknown key '{key}'{suggest(key, top_fields)}")
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise AfpError(f"{where(key)}: '{key}' must be a section (a mapping), got {value!r}")
            sections[key] = build_section(key, _SECTIONS[key], value, where)
        else:
            sections[key] = coerce(key, top_fields[key].type, value, where)
    for required in ("model", "data"):
        if required not in sections:
            raise AfpError(f"{where(required)}: missing section '{required}'")
    try:
        return AlignConfig(**sections)
    except ConfigValueError as error:
        raise AfpError(f"{where(error.key)}: {error}") from None


def config_to_yaml(config: AlignConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def reference_markdown() -> str:
    """The recipe reference (every key, its default and help) as Markdown tables; docs/align.md embeds it."""
    blocks = []
    top = [f for f in dataclasses.fields(AlignConfig) if f.name not in _SECTIONS]
    sections = [("top level", top)] + [(name, dataclasses.fields(cls)) for name, cls in _SECTIONS.items()]
    for title, fields in sections:
        rows = ["| key | default | meaning |", "|---|---|---|"]
        for item in fields:
            key = item.name if title == "top level" else f"{title}.{item.name}"
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            shown = "required" if default is dataclasses.MISSING else json.dumps(default)
            rows.append(f"| `{key}` | `{shown}` | {item.metadata.get('help', '')} |")
        blocks.append(f"### {title}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(blocks)


__all__ = [
    "AlignConfig",
    "ModelConfig",
    "LoRAConfig",
    "MCLConfig",
    "CITConfig",
    "DataConfig",
    "TrainConfig",
    "load_config",
    "build_config",
    "config_to_yaml",
    "reference_markdown",
]
