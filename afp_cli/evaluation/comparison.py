"""Turn lm-eval results of several models into one comparison table: metric per task × model × shots, with the
delta to the base model, lm-eval's stderr, and the mean and spread over seeds (Markdown for people, JSON for
programs)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from afp_cli.report import markdown_table, write_atomically, write_json

COLUMNS = ("task", "shots", "metric", "model", "value", "stderr", "seeds", "spread", "delta_vs_base")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def shots_run(task: str, results: dict[str, Any], requested: int | None) -> int | str | None:
    """The number of demonstrations a task (or group: its members, when they agree) really ran with, as lm-eval
    records it in ``n-shot``; a group whose members differ shows them all ("0/1")."""
    recorded = results.get("n-shot", {})
    if task in recorded:
        return int(recorded[task])
    members = {int(recorded[m]) for m in results.get("group_subtasks", {}).get(task, []) if m in recorded}
    if len(members) == 1:
        return members.pop()
    return "/".join(map(str, sorted(members))) if members else requested


def result_rows(model: str, shots: int | None, results: dict[str, Any], seed: int | None = None) -> list[dict[str, Any]]:
    """One row per (task or group, metric) of lm-eval's ``results`` dict (``"acc,none"`` keys, filter kept);
    ``shots`` is what was asked for, the row gets what ran."""
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
            rows.append({"task": task, "shots": shots_run(task, results, shots), "metric": label, "model": model,
                         "value": float(value), "stderr": stderr, "seed": seed})
    return rows


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, shots, metric, model): the mean over seeds as ``value``, their sample standard deviation
    as ``spread`` (the paper averages over seeds), ``seeds`` the seeds it covers. One seed: the row as it is, with
    lm-eval's stderr; several: stderr left empty (each run has its own)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["shots"], row["metric"], row["model"]), []).append(row)
    summary = []
    for (task, shots, metric, model), members in groups.items():
        values = [member["value"] for member in members]
        seeds = ",".join(str(member["seed"]) for member in members)
        if len(members) == 1:
            summary.append({**members[0], "seeds": seeds, "spread": None})
            continue
        summary.append({"task": task, "shots": shots, "metric": metric, "model": model,
                        "value": statistics.fmean(values), "stderr": None, "seeds": seeds,
                        "spread": statistics.stdev(values)})
    for row in summary:
        row.pop("seed", None)
    return summary


def add_deltas(rows: list[dict[str, Any]], base: str = "base") -> list[dict[str, Any]]:
    """``delta_vs_base`` = value − the base model's value for the same task, shots and metric."""
    base_values = {(r["task"], r["shots"], r["metric"]): r["value"] for r in rows if r["model"] == base}
    for row in rows:
        reference = base_values.get((row["task"], row["shots"], row["metric"]))
        row["delta_vs_base"] = None if reference is None or row["model"] == base else row["value"] - reference
    return sorted(rows, key=lambda r: (r["task"], str(r["shots"]), r["metric"]))


def write_comparison(output_dir: Path, rows: list[dict[str, Any]], run: dict[str, Any],
                     per_seed: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """``comparison.md`` and ``comparison.json`` in ``output_dir``, each written atomically."""
    title = f"# afp evaluate: {run['model']}\n\n"
    legend = ("\nshots: the demonstrations each task ran with; value: lm-eval's metric (the mean over the seeds "
              "when several), spread: their sample standard deviation; stderr: lm-eval's (one seed only); "
              "delta_vs_base = value − base model's value (same task, shots and metric).\n")
    markdown = write_atomically(output_dir / "comparison.md", title + markdown_table(rows, COLUMNS) + legend)
    payload = {"run": run, "rows": rows, **({"per_seed_rows": per_seed} if per_seed is not None else {})}
    return markdown, write_json(output_dir / "comparison.json", payload)
