"""`afp analyze loss` from start to end: an AFP training file -> CIT loss and retrieval per model -> report files.

The two numbers `afp align` watches on its held-out slice (afp_cli/align/held_out.py), measured the same way on any
AFP JSON-lines file, for the base model and each adapter side by side:

- **CIT loss**: the mean next-token cross-entropy over every answer token of the file (the tokens after
  ``clm_prompt_len``, plus the appended EOS; prompt and BOS are not targets), tokenised as `afp align` tokenises
  with its default ``cit`` settings. Each batch's mean is weighted by its answer tokens, so the result is the
  mean over tokens whatever the batch size. Perplexity is its exponential.
- **Retrieval**: the share of ``sent0`` whose most cosine-similar ``sent1`` among all the file's pairs is its own
  translation (and the reverse), with sentence vectors pooled as MCL pools them (``mcl.pooling``). Hard negatives
  are not used: they are not pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afp_cli.analyze.output import check_writable, report_paths, write_report
from afp_cli.data.training_records import CIT_KEYS, TrainingExample, read_training_file
from afp_cli.errors import AfpError, located, warn
from afp_cli.model.pooling import Pooling, parse_pooling
from afp_cli.progress import counting
from afp_cli.report import markdown_table

REPORT_STEM = "loss"

# `afp align`'s defaults (afp_cli/align/config.py: mcl.pooling, data.max_length, cit.learn_prompt, cit.append_eos),
# repeated here because analysis does not import training; tests/test_analyze_loss.py holds them equal.
DEFAULT_POOLING = "last-1"  # the official MCL pooling: last token of layer 1 (0 = embeddings)
DEFAULT_MAX_LENGTH = 512
LEARN_PROMPT = False  # only answer tokens are targets
APPEND_EOS = True  # the model is scored on ending its answer, as it is trained to

# (key in JSON, column in Markdown, column of its change vs base); a metric the file cannot give is left out.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("cit_loss", "CIT loss ↓", "Δ loss"),
    ("perplexity", "perplexity ↓", "Δ perplexity"),
    ("retrieval_top1", "top-1 sent0→sent1 ↑", "Δ top-1 →"),
    ("retrieval_top1_reverse", "top-1 sent1→sent0 ↑", "Δ top-1 ←"),
)


def _pooling(spec: str) -> Pooling:
    try:
        pooling = parse_pooling(spec)
    except ValueError as error:
        raise AfpError(f"--pooling: {error}") from None
    if pooling.auto:
        raise AfpError(
            f"--pooling: '{spec}' is measured when `afp align` starts; give a layer (afp analyze alignment shows the "
            "one auto would choose)"
        )
    return pooling


@dataclass(frozen=True)
class LossConfig:
    model: str
    data: Path
    output_dir: Path
    adapters: tuple[str, ...] = ()
    pooling: str = DEFAULT_POOLING
    max_examples: int | None = None  # None: every line of the file
    max_length: int = DEFAULT_MAX_LENGTH  # tokens per sentence and per instruction text; longer ones are truncated
    batch_size: int = 8
    seed: int = 0  # nothing here is random (dropout is off); recorded so every afp report carries its seed
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    allow_other_base: bool = False  # load adapters on a base other than the one they were trained on

    def __post_init__(self) -> None:
        _pooling(self.pooling)  # a bad --pooling fails here, before anything is read
        if self.max_examples is not None and self.max_examples < 1:
            raise AfpError(f"--max-examples must be 1 or more, got {self.max_examples}")
        if self.batch_size < 1:
            raise AfpError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.max_length < 8:  # as align's data.max_length: a prompt and an answer need room
            raise AfpError(f"--max-length must be 8 or more, got {self.max_length}")

    @property
    def parsed_pooling(self) -> Pooling:
        return _pooling(self.pooling)


@dataclass(frozen=True)
class FileContents:
    """The examples scored, and which objectives the file has fields for."""

    examples: list[TrainingExample]
    with_pairs: bool
    with_instructions: bool


def read_examples(path: Path, max_examples: int | None) -> FileContents:
    """Every line of ``path`` checked, the first ``max_examples`` kept, hard negatives dropped.

    The first line decides which objectives are scored (sent0/sent1: retrieval; clm_text/clm_prompt_len: CIT loss);
    every line must then carry the same fields, so a file never gets a loss over a silently chosen subset of lines.
    """
    from afp_cli.data.readers import iter_json_objects

    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: file not found")
    with contextlib.closing(iter_json_objects(path)) as records:
        found = next(records, None)
    if found is None:
        raise AfpError(f"{path}: no examples (the file is empty)")
    line, first = found
    if not isinstance(first, dict):
        raise located(path, line, None, "each line must be a JSON object")
    with_pairs = "sent0" in first or "sent1" in first
    with_instructions = any(key in first for key in CIT_KEYS)
    if not (with_pairs or with_instructions):
        raise located(
            path,
            line,
            "sent0",
            "missing: a line needs sent0 and sent1 (retrieval), or clm_text and clm_prompt_len (CIT loss), or all four",
        )
    examples = read_training_file(path, need_pairs=with_pairs, need_instructions=with_instructions, warn=warn)
    examples = [dataclasses.replace(example, hard_negative=None) for example in examples[:max_examples]]
    if with_pairs and len(examples) < 2:
        raise AfpError(f"{path}: retrieval needs at least 2 pairs, found {len(examples)}")
    return FileContents(examples, with_pairs, with_instructions)


def run_loss(config: LossConfig) -> list[dict[str, Any]]:
    """Score the base model and each adapter on ``config.data``; write loss.md and loss.json; return the rows."""
    from afp_cli.analyze.alignment_run import model_config
    from afp_cli.data.batches import collate, tokenize_examples
    from afp_cli.model.scoring import answer_tokens
    from afp_cli.model.variants import load_variants

    paths = report_paths(config.output_dir, REPORT_STEM, ())
    check_writable(paths, config.overwrite)
    contents = read_examples(config.data, config.max_examples)
    pooling = config.parsed_pooling
    depth = model_config(config.model).num_hidden_layers  # checked before the weights load: a typo must not wait
    pooling.check_depth(depth, "--pooling")
    loaded = load_variants(config.model, config.adapters, config.device, config.dtype, config.allow_other_base)
    tokenized, counts = tokenize_examples(
        contents.examples,
        loaded.tokenizer,
        config.max_length,
        contents.with_pairs,
        contents.with_instructions,
        LEARN_PROMPT,
        APPEND_EOS,
    )
    batches = [
        collate(tokenized[start : start + config.batch_size], loaded.tokenizer.pad_token_id)
        for start in range(0, len(tokenized), config.batch_size)
    ]
    rows = []
    with counting("scoring", total=len(batches) * len(loaded.labels)) as advance:
        for label, model in loaded.variants():
            rows.append({"model": label, **score_model(model, batches, pooling, advance)})
    add_changes(rows)
    summary = {
        "examples": len(contents.examples),
        "answer_tokens": sum(answer_tokens(batch.instruction_labels) for batch in batches),
        "truncated_sentences": counts.truncated_sentences,
        "truncated_instructions": counts.truncated_instructions,
    }
    payload = {"config": _config_summary(config), **summary, "rows": rows}
    write_report(paths, render_markdown(rows, config, summary), payload, {})
    return rows


def score_model(model, batches, pooling: Pooling, advance=lambda count: None) -> dict[str, float]:
    """CIT loss and perplexity (when the batches carry instruction texts), retrieval both ways (when they carry
    pairs), with dropout off, no gradients, and bf16 autocast on CUDA only (as `afp align` evaluates)."""
    import torch

    from afp_cli.model.scoring import score_batches

    device = model.device
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    )
    scores = score_batches(model, batches, pooling, device, autocast, advance=advance)
    if batches[0].instruction_ids is not None:
        if "cit_loss" not in scores:
            raise AfpError("every answer was truncated away: raise --max-length")
        scores = {"cit_loss": scores["cit_loss"], "perplexity": math.exp(scores["cit_loss"]), **scores}
    return scores


def add_changes(rows: list[dict[str, Any]]) -> None:
    """Give every adapter row ``<metric>_change``: its value minus the base's (the first row)."""
    base = rows[0]
    for row in rows[1:]:
        for key, _, _ in METRICS:
            if key in base:
                row[f"{key}_change"] = row[key] - base[key]


def _config_summary(config: LossConfig) -> dict[str, Any]:
    return {
        "model": config.model,
        "adapters": list(config.adapters),
        "data": str(config.data),
        "pooling": config.pooling,
        "max_examples": config.max_examples,
        "max_length": config.max_length,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "learn_prompt": LEARN_PROMPT,
        "append_eos": APPEND_EOS,
    }


def render_markdown(rows: Sequence[dict[str, Any]], config: LossConfig, summary: dict[str, int]) -> str:
    present = [metric for metric in METRICS if metric[0] in rows[0]]
    with_loss = "cit_loss" in rows[0]
    columns = ["model", "examples", *(["answer tokens"] if with_loss else [])]
    for _, name, change in present:
        columns += [name, change]
    table = []
    for row in rows:
        cells = {"model": row["model"], "examples": summary["examples"], "answer tokens": summary["answer_tokens"]}
        for key, name, change in present:
            cells[name] = row[key]
            cells[change] = row.get(f"{key}_change")
        table.append(cells)
    notes = []
    if with_loss:
        notes.append(
            "CIT loss: mean next-token cross-entropy over every answer token (after `clm_prompt_len`, EOS "
            "appended; prompt and BOS are not scored); perplexity = exp(loss)."
        )
    if "retrieval_top1" in rows[0]:
        pooling = config.parsed_pooling
        where = "the final layer" if pooling.layer is None else f"layer {pooling.layer} (0 = embeddings)"
        notes.append(
            f"Retrieval: top-1 by cosine among all {summary['examples']} pairs "
            f"(chance {1 / summary['examples']:.4f}); sentence vectors: `{pooling.method}` pooling of "
            f"{where}, `{config.pooling}` as in `mcl.pooling`."
        )
    if summary["truncated_sentences"] or summary["truncated_instructions"]:
        notes.append(
            f"Truncated at {config.max_length} tokens: {summary['truncated_sentences']} sentences, "
            f"{summary['truncated_instructions']} instruction texts."
        )
    return "".join(
        [
            "# Held-out loss and retrieval\n\n",
            f"`{config.model}` on `{config.data}`, dropout off; Δ = the model minus the base. "
            "Not a benchmark: a quick check of what aligning did to the objectives it trained.\n\n",
            "".join(f"- {note}\n" for note in notes),
            "\n",
            markdown_table(table, columns, digits=4),
        ]
    )
