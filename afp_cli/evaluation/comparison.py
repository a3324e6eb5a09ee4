"""Turn lm-eval results of several models into one comparison table: metric per task × model × shots, with the
delta to the base model and its paired test (significance.py), lm-eval's stderr, and the mean and spread over seeds
(Markdown for people, JSON for programs)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from afp_cli.evaluation.significance import metric_label
from afp_cli.report import markdown_table, write_json
from afp_cli.text_files import write_atomically

COLUMNS = ("task", "shots", "metric", "model", "value", "stderr", "seeds", "spread", "delta_vs_base")
DELTA_COLUMN = "Δ base [95 % CI] p"
MARKDOWN_COLUMNS = (
    "task",
    "shots",
    "metric",
    "model",
    "value",
    "stderr",
    "seeds",
    "spread",
    DELTA_COLUMN,
    "p (Holm)",
    "paired test",
)
TEST_NAMES = {"mcnemar-exact": "McNemar exact", "paired-bootstrap": "bootstrap"}


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


def result_rows(
    model: str, shots: int | None, results: dict[str, Any], seed: int | None = None
) -> list[dict[str, Any]]:
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
            label = metric_label(metric, filter_name)
            rows.append(
                {
                    "task": task,
                    "shots": shots_run(task, results, shots),
                    "metric": label,
                    "model": model,
                    "value": float(value),
                    "stderr": stderr,
                    "seed": seed,
                }
            )
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
        summary.append(
            {
                "task": task,
                "shots": shots,
                "metric": metric,
                "model": model,
                "value": statistics.fmean(values),
                "stderr": None,
                "seeds": seeds,
                "spread": statistics.stdev(values),
            }
        )
    for row in summary:
        row.pop("seed", None)
    return summary


def add_deltas(rows: list[dict[str, Any]], base: str = "base", by_seed: bool = False) -> list[dict[str, Any]]:
    """``delta_vs_base`` = value − the base model's value for the same task, shots and metric (and seed, for
    per-seed rows)."""

    def key(row: dict[str, Any]) -> tuple:
        return (row["task"], row["shots"], row["metric"], row.get("seed") if by_seed else None)

    base_values = {key(r): r["value"] for r in rows if r["model"] == base}
    for row in rows:
        reference = base_values.get(key(row))
        row["delta_vs_base"] = None if reference is None or row["model"] == base else row["value"] - reference
    return sorted(rows, key=lambda r: (r["task"], str(r["shots"]), r["metric"], str(r.get("seed", ""))))


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def format_p(p_value: float | None) -> str:
    """``p<0.001``, else two significant digits: ``p=0.012``, ``p=0.35``, ``p=1``."""
    if p_value is None:
        return "–"
    return "p<0.001" if p_value < 0.001 else f"p={p_value:.2g}"


def delta_cell(row: dict[str, Any]) -> str:
    """``+0.0180 [+0.0040, +0.0310] p=0.012 *`` (* = the interval excludes 0), the delta alone when untested."""
    if row.get("delta_vs_base") is None:
        return "–"
    if row.get("p_value") is None:
        return _signed(row["delta_vs_base"])
    mark = " *" if row.get("ci_excludes_zero") else ""
    return (
        f"{_signed(row['delta_vs_base'])} [{_signed(row['ci_low'])}, {_signed(row['ci_high'])}] "
        f"{format_p(row['p_value'])}{mark}"
    )


def _markdown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    shown = []
    for row in rows:
        test = TEST_NAMES.get(row.get("test") or "", row.get("test"))
        paired = row.get("paired")
        shown.append(
            {
                **row,
                DELTA_COLUMN: delta_cell(row),
                "p (Holm)": None if row.get("p_holm") is None else format_p(row["p_holm"]).removeprefix("p="),
                "paired test": f"{test}, {paired}" if test else paired,
            }
        )
    return shown


def _legend(run: dict[str, Any], several_seeds: bool) -> str:
    resamples = run.get("bootstrap")
    seed = (run.get("seed") or [0])[0] if isinstance(run.get("seed"), list) else run.get("seed", 0)
    seeds = (
        " With several seeds, each seed's row (per seed, below) is tested on its own, and the mean row by the "
        "bootstrap in which a resampled document keeps its results of every seed (the statistic: the mean over "
        "seeds of the delta), which is what `× N seeds (mean)` says was paired."
        if several_seeds
        else ""
    )
    return (
        "\nshots: the demonstrations each task ran with; value: lm-eval's metric (the mean over the seeds when "
        "several), "
        "spread: their sample standard deviation; stderr: lm-eval's (one seed only).\n\n"
        f"{DELTA_COLUMN}: value − the base model's value (same task, shots and metric), with a 95 % interval and the "
        "p-value of a paired test on the same documents (`paired test` says which, and on what): accuracy-style "
        "metrics (acc, acc_norm, exact_match) by the exact McNemar test, the interval Newcombe's square-and-add for "
        "a difference of paired proportions (method 10, 1998); other metrics (BLEU, chrF++, ROUGE, …) by a paired "
        f"bootstrap over documents ({resamples} resamples, seed {seed}; `--bootstrap`), the metric recomputed on "
        "each resample, a percentile interval and p = (1 + #{|δ* − δ| ≥ |δ|}) / (resamples + 1). "
        f"* = the interval excludes 0. p (Holm): Holm's adjustment over every tested adapter row of the table.{seeds}\n"
    )


def write_comparison(
    output_dir: Path, rows: list[dict[str, Any]], run: dict[str, Any], per_seed: list[dict[str, Any]] | None = None
) -> tuple[Path, Path]:
    """``comparison.md`` and ``comparison.json`` in ``output_dir``, each written atomically."""
    title = f"# afp evaluate: {run['model']}\n\n"
    parts = [title, markdown_table(_markdown_rows(rows), MARKDOWN_COLUMNS)]
    if per_seed is not None:
        parts += [
            "\n## Per seed\n\n",
            markdown_table(_markdown_rows(per_seed), ("seed", *MARKDOWN_COLUMNS[:6], *MARKDOWN_COLUMNS[8:])),
        ]
    parts.append(_legend(run, per_seed is not None))
    markdown = write_atomically(output_dir / "comparison.md", "".join(parts))
    payload = {"run": run, "rows": rows, **({"per_seed_rows": per_seed} if per_seed is not None else {})}
    return markdown, write_json(output_dir / "comparison.json", payload)
