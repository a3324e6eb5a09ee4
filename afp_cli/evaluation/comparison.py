"""Turn lm-eval results of several models into one comparison table: metric per task × model × shots, with the
delta to the base model and lm-eval's stderr (Markdown for people, JSON for programs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from afp_cli.report import markdown_table, write_json, write_atomically

COLUMNS = ("task", "shots", "metric", "model", "value", "stderr", "delta_vs_base")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def result_rows(model: str, shots: int, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task or group, metric) of lm-eval's ``results`` dict (``"acc,none"`` keys, filter kept)."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            if _number(value) is None:
                continue
            stderr = _number(metrics.get(f"{metric}_stderr,{filter_name}"))
            label = metric if filter_name == "none" else f"{metric} ({filter_name})"
            rows.append({"task": task, "shots": shots, "metric": label, "model": model,
                         "value": float(value), "stderr": stderr})
    return rows


def add_deltas(rows: list[dict[str, Any]], base: str = "base") -> list[dict[str, Any]]:
    """``delta_vs_base`` = value − the base model's value for the same task, shots and metric."""
    base_values = {(r["task"], r["shots"], r["metric"]): r["value"] for r in rows if r["model"] == base}
    for row in rows:
        reference = base_values.get((row["task"], row["shots"], row["metric"]))
        row["delta_vs_base"] = None if reference is None or row["model"] == base else row["value"] - reference
    return sorted(rows, key=lambda r: (r["task"], r["shots"], r["metric"]))


def write_comparison(output_dir: Path, rows: list[dict[str, Any]], run: dict[str, Any]) -> tuple[Path, Path]:
    """``comparison.md`` and ``comparison.json`` in ``output_dir``, each written atomically."""
    title = f"# afp evaluate: {run['model']}\n\n"
    legend = ("\nvalue and stderr as reported by lm-eval; delta_vs_base = value − base model's value "
              "(same task, shots and metric).\n")
    markdown = write_atomically(output_dir / "comparison.md", title + markdown_table(rows, COLUMNS) + legend)
    payload = write_json(output_dir / "comparison.json", {"run": run, "rows": rows})
    return markdown, payload
