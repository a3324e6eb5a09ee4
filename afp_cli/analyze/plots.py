"""Figures of the analysis reports (matplotlib, Agg backend: no display needed): rates, per-layer metrics, maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on servers and in tests without a display
    import matplotlib.pyplot as plt

    return plt


def language_rate_bars(rows: Sequence[Mapping[str, Any]]):
    """Grouped bars: one group per direction × shots, one bar per model, 95 % Wilson interval as error bar."""
    plt = _pyplot()
    groups = list(dict.fromkeys(_group_label(row) for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    width = 0.8 / len(models)
    figure, axis = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) * max(1, len(models)) ** 0.5 + 2), 4))
    for index, model in enumerate(models):
        by_group = {_group_label(row): row for row in rows if row["model"] == model}
        positions = [
            group_index + (index - (len(models) - 1) / 2) * width
            for group_index, group in enumerate(groups)
            if group in by_group
        ]
        present = [by_group[group] for group in groups if group in by_group]
        rates = [100 * row["rate"] for row in present]
        errors = [
            [100 * (row["rate"] - row["ci_low"]) for row in present],
            [100 * (row["ci_high"] - row["rate"]) for row in present],
        ]
        axis.bar(positions, rates, width, yerr=errors, capsize=3, label=model)
    axis.set_xticks(range(len(groups)), groups)
    axis.set_ylim(0, 105)
    axis.set_ylabel("answers in the target language (%)")
    axis.set_title("Language rate (95 % Wilson interval)")
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _group_label(row: Mapping[str, Any]) -> str:
    shots = row.get("shots")
    return row["direction"] if shots is None else f"{row['direction']}\n{shots}-shot"


def metrics_by_layer(rows: Sequence[Mapping[str, Any]], metrics: Sequence[tuple[str, str]]):
    """One panel per metric (key, title), metric against layer, one line per model."""
    plt = _pyplot()
    models = list(dict.fromkeys(row["model"] for row in rows))
    columns = min(3, len(metrics))
    line_count = -(-len(metrics) // columns)
    figure, axes = plt.subplots(line_count, columns, figsize=(4.2 * columns, 3.2 * line_count), squeeze=False)
    for axis, (key, title) in zip(axes.flat, metrics):
        for model in models:
            points = [(row["layer"], row[key]) for row in rows if row["model"] == model]
            axis.plot([layer for layer, _ in points], [value for _, value in points], marker="o", label=model)
        axis.set_title(title, fontsize="medium")
        axis.set_xlabel("layer (0 = embeddings)")
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def projection_map(panels: Sequence[tuple[str, Any, Any]], languages: tuple[str, str], joined_pairs: int, title: str):
    """Scatter of both languages' 2-D points, one panel per model, lines joining the first ``joined_pairs`` pairs.

    ``panels`` holds ``(model, points_x, points_y)`` with row i of each array a translation pair.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for axis, (model, points_x, points_y) in zip(axes.flat, panels):
        for index in range(min(joined_pairs, len(points_x))):
            axis.plot(
                [points_x[index, 0], points_y[index, 0]],
                [points_x[index, 1], points_y[index, 1]],
                color="grey",
                linewidth=0.7,
                alpha=0.8,
            )
        for points, language in zip((points_x, points_y), languages):
            axis.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, label=language)
        axis.set_title(model, fontsize="medium")
        axis.set_xticks([])
        axis.set_yticks([])
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
