"""`afp analyze alignment` from start to end: pairs -> pooled hidden states per model -> metrics -> report files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from afp_cli.analyze.alignment import alignment_metrics, parse_layers, pooled_states, project_2d, read_pairs
from afp_cli.analyze.output import check_writable, report_paths, write_report
from afp_cli.analyze.plots import metrics_by_layer, projection_map
from afp_cli.errors import AfpError
from afp_cli.model.pooling import METHODS, candidate_layers, choose_layer
from afp_cli.progress import counting
from afp_cli.report import markdown_table

REPORT_STEM = "alignment"
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}  # option value -> name in titles

# (JSON key, plot title); the Markdown column names come from the same table.
METRICS: tuple[tuple[str, str], ...] = (
    ("pair_cosine", "cosine of translation pairs ↑"),
    ("random_cosine", "cosine of random pairs"),
    ("alignment", "alignment ‖x−y‖² ↓"),
    ("uniformity", "uniformity log E exp(−2‖u−v‖²) ↓"),
    ("retrieval_x_to_y", "top-1 retrieval x→y ↑"),
    ("retrieval_y_to_x", "top-1 retrieval y→x ↑"),
)


@dataclass(frozen=True)
class AlignmentConfig:
    model: str
    pairs: Path
    output_dir: Path
    adapters: tuple[str, ...] = ()
    languages: tuple[str, ...] | None = None  # None: from the TSV header
    layers: str = "all"
    pooling: str = "last"
    max_pairs: int = 1000  # first N pairs: all-pairs retrieval and uniformity grow with N²
    batch_size: int = 16
    max_length: int = 128  # tokens per sentence
    plot_layer: int = 1  # the official MCL pooling layer
    projection: str = "pca"
    plot_pairs: int = 200  # points per language on the 2-D map
    joined_pairs: int = 10  # translation pairs joined by a line on the map
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    allow_other_base: bool = False  # load adapters on a base other than the one they were trained on

    def __post_init__(self) -> None:
        if self.pooling not in METHODS:
            raise AfpError(f"--pooling: unknown pooling '{self.pooling}', use one of {', '.join(METHODS)}")
        if self.projection not in PROJECTIONS:
            raise AfpError(f"--projection: unknown method '{self.projection}', use one of {', '.join(PROJECTIONS)}")
        for name in ("max_pairs", "batch_size", "max_length", "plot_pairs"):
            if getattr(self, name) < (2 if name in {"max_pairs", "plot_pairs"} else 1):
                raise AfpError(f"--{name.replace('_', '-')} is too small: {getattr(self, name)}")
        if self.joined_pairs < 0:
            raise AfpError(f"--joined-pairs must be 0 or more, got {self.joined_pairs}")


def run_alignment(config: AlignmentConfig) -> list[dict[str, Any]]:
    from afp_cli.model.variants import load_variants

    paths = report_paths(config.output_dir, REPORT_STEM, ("layers", "map"))
    check_writable(paths, config.overwrite)
    pairs = read_pairs(config.pairs, config.max_pairs, config.languages)
    # Layers are checked against the model's config before its weights load: a typo must not wait for them.
    num_layers = model_config(config.model).num_hidden_layers
    layers = parse_layers(config.layers, num_layers)
    parse_layers(str(config.plot_layer), num_layers)  # the map's layer must exist too
    loaded = load_variants(config.model, config.adapters, config.device, config.dtype, config.allow_other_base)
    collected_layers = sorted(set(layers) | {config.plot_layer})
    rows, panels = [], []
    count = len(pairs.sources)
    with counting("encoding pairs", total=count * len(loaded.labels)) as advance:
        for label, model in loaded.variants():
            states = pooled_states(
                model,
                loaded.tokenizer,
                pairs,
                collected_layers,
                config.pooling,
                config.batch_size,
                config.max_length,
                advance,
            )
            rows.extend(
                {"model": label, "layer": layer, **asdict(alignment_metrics(*states[layer], config.seed))}
                for layer in layers
            )
            panels.append((label, *_map_points(states[config.plot_layer], config)))
    mark_auto_choice(rows, num_layers)
    x_name, y_name = pairs.languages
    titles = [
        (key, title.replace("x→y", f"{x_name}→{y_name}").replace("y→x", f"{y_name}→{x_name}")) for key, title in METRICS
    ]
    figures = {
        "layers": metrics_by_layer(rows, titles),
        "map": projection_map(
            panels,
            pairs.languages,
            config.joined_pairs,
            f"{PROJECTIONS[config.projection]} of layer {config.plot_layer} ({config.pooling} pooling)",
        ),
    }
    payload = {"config": _config_summary(config, pairs.languages, count), "rows": rows}
    write_report(paths, render_markdown(rows, config, pairs.languages, count), payload, figures)
    return rows


def mark_auto_choice(rows: list[dict[str, Any]], depth: int) -> None:
    """Give every row ``auto_choice``: whether ``mcl.pooling: auto`` would pool this layer for this model, chosen as
    `afp align` chooses (afp_cli/model/pooling.py:choose_layer, on the mean top-1 retrieval of both directions)
    among the layers measured here. No model gets a choice when no measured layer is a candidate."""
    for label in dict.fromkeys(row["model"] for row in rows):
        own = [row for row in rows if row["model"] == label]
        retrieval = {row["layer"]: (row["retrieval_x_to_y"] + row["retrieval_y_to_x"]) / 2 for row in own}
        chosen = None
        if any(layer in retrieval for layer in candidate_layers(depth)):
            chosen = choose_layer(retrieval, depth)
        for row in own:
            row["auto_choice"] = row["layer"] == chosen


def auto_choices(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The row ``auto`` would pool, one per model that has one (see :func:`mark_auto_choice`)."""
    return [row for row in rows if row.get("auto_choice")]


def model_config(name_or_path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise AfpError(f"cannot load model config '{name_or_path}': {first_line}") from None


def _map_points(states, config: AlignmentConfig):
    """2-D points of the first ``plot_pairs`` pairs, both languages projected together so they share axes."""
    import numpy as np

    vectors_x, vectors_y = (part[: config.plot_pairs].numpy() for part in states)
    points = project_2d(np.concatenate([vectors_x, vectors_y]), config.projection, config.seed)
    return points[: len(vectors_x)], points[len(vectors_x) :]


def _config_summary(config: AlignmentConfig, languages: tuple[str, str], count: int) -> dict[str, Any]:
    return {
        "model": config.model,
        "adapters": list(config.adapters),
        "pairs": str(config.pairs),
        "languages": list(languages),
        "pair_count": count,
        "layers": config.layers,
        "pooling": config.pooling,
        "max_length": config.max_length,
        "seed": config.seed,
        "plot_layer": config.plot_layer,
        "projection": config.projection,
    }


def render_markdown(
    rows: Sequence[dict[str, Any]], config: AlignmentConfig, languages: tuple[str, str], count: int
) -> str:
    x_name, y_name = languages
    names = {
        "pair_cosine": "cos pairs",
        "random_cosine": "cos random",
        "alignment": "alignment ↓",
        "uniformity": "uniformity ↓",
        "retrieval_x_to_y": f"top-1 {x_name}→{y_name}",
        "retrieval_y_to_x": f"top-1 {y_name}→{x_name}",
    }
    table = [
        {"model": row["model"], "layer": row["layer"], **{names[key]: row[key] for key, _ in METRICS}} for row in rows
    ]
    chosen = "".join(
        f"- `mcl.pooling: auto` would pool `{config.pooling}-{row['layer']}` for {row['model']} (top-1 "
        f"{x_name}→{y_name} {row['retrieval_x_to_y']:.4f}, {y_name}→{x_name} {row['retrieval_y_to_x']:.4f}; "
        "the best mean of both among the layers measured here, never the embeddings or the last layer).\n"
        for row in auto_choices(rows)
    )
    return "".join(
        [
            "# Representation alignment\n\n",
            f"`{config.model}` on {count} {x_name}–{y_name} pairs from `{config.pairs}`, {config.pooling} pooling, "
            "layer 0 = embeddings. Vectors are L2-normalised; alignment and uniformity follow Wang & Isola (2020) "
            "(alpha 2, t 2; uniformity over both languages together); random pairs are a seeded derangement.\n\n",
            chosen + ("\n" if chosen else ""),
            markdown_table(table, ["model", "layer", *names.values()], digits=4),
            f"\n![metrics by layer]({REPORT_STEM}_layers.png)\n\n![2-D map]({REPORT_STEM}_map.png)\n",
        ]
    )
