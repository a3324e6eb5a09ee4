"""Is an adapter's delta to the base real? A paired test of every comparison row on the same documents.

lm-eval's own comparator (``scripts/model_comparator.py``) tests two runs with an unpaired z-test; afp has both
models' per-document results in the samples lm-eval logs and pairs them: document i of the adapter against
document i of the base (matched by ``doc_id``, refused when the documents' hashes differ).

- accuracy-style metrics (``acc``, ``acc_norm``, ``exact_match``: 0/1 per document): the exact McNemar test and
  Newcombe's interval for the difference of paired proportions (afp_cli/statistics.py);
- every other metric (BLEU, chrF++, ROUGE, any mean or corpus metric): a paired bootstrap over documents, the
  task's own aggregation recomputed on each resample (a corpus BLEU is a corpus BLEU of the resampled sentences;
  aggregations that declare additive sentence statistics, afp's BLEU and chrF++, sum them instead);
- several seeds: each seed's row gets its own test (per-seed rows), and the mean row a bootstrap in which a
  resampled document carries its results of every seed, the statistic being the mean over seeds of the delta;
- a group row (e.g. ``afp_xnli``) is tested on its members' documents pooled, when the group's value is their
  size-weighted mean (checked on the numbers); otherwise it gets no test;
- Holm's adjustment over every tested adapter row of a table (``p_holm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from afp_cli.statistics import DEFAULT_RESAMPLES, AdditiveMetric, PairedResult, holm, mcnemar, paired_bootstrap

ACCURACY_METRICS = frozenset({"acc", "acc_norm", "exact_match"})
TEST_FIELDS = ("p_value", "ci_low", "ci_high", "test", "paired", "p_holm", "ci_excludes_zero")

# (task or group, shots that ran, metric label) -> {(leaf task, doc_id): (doc_hash, value)}
RunItems = dict[tuple[str, Any, str], dict[tuple[str, int], tuple[str, Any]]]


def metric_label(metric: str, filter_name: str) -> str:
    """The metric as the comparison shows it: ``acc``, or ``exact_match (strict-match)`` for another filter."""
    return metric if filter_name == "none" else f"{metric} ({filter_name})"


def _leaves(task: str, members: Mapping[str, list[str]]) -> list[str]:
    if task not in members:
        return [task]
    return [leaf for member in members[task] for leaf in _leaves(member, members)]


def collect_items(results: dict[str, Any], shots_of: Callable[[str], Any]) -> RunItems:
    """Per-document values of one lm-eval run, from ``results["samples"]``, for every task and group row.

    ``shots_of(task)`` is the shot count the comparison row of ``task`` shows. A sample's metric value is what the
    task's ``process_results`` returned for the document (a 0/1 accuracy, a float, a (prediction, reference)
    tuple for a corpus metric).
    """
    per_leaf: dict[tuple[str, str], dict[tuple[str, int], tuple[str, Any]]] = {}
    for task, records in (results.get("samples") or {}).items():
        for record in records:
            for metric in record.get("metrics", []):
                label = metric_label(metric, record.get("filter", "none"))
                per_leaf.setdefault((task, label), {})[(task, int(record["doc_id"]))] = (
                    record.get("doc_hash", ""),
                    record.get(metric),
                )
    members = results.get("group_subtasks") or {}
    items: RunItems = {}
    for task in results.get("results", {}):
        labels = {label for leaf in _leaves(task, members) for (name, label) in per_leaf if name == leaf}
        for label in labels:
            pooled: dict[tuple[str, int], tuple[str, Any]] = {}
            for leaf in _leaves(task, members):
                pooled.update(per_leaf.get((leaf, label), {}))
            items[(task, shots_of(task), label)] = pooled
    return items


def _is_binary(values: Sequence[Any]) -> bool:
    return all(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1) or isinstance(value, bool)
        for value in values
    )


def _is_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(value, (int, float)) and math.isfinite(float(value)) for value in values)


def _mean(values: list[Any]) -> float:
    return sum(float(value) for value in values) / len(values)


MEAN = AdditiveMetric(
    statistics=lambda values: [[float(value), 1.0] for value in values], score=lambda summed: summed[0] / summed[1]
)


def _as_metric(aggregation: Callable | None):
    """The aggregation as the bootstrap needs it: additive sentence statistics when the function declares them
    (``item_statistics`` and ``score_statistics`` attributes: afp's BLEU and chrF++), else the function itself."""
    if aggregation is None:
        return None
    if hasattr(aggregation, "item_statistics") and hasattr(aggregation, "score_statistics"):
        return AdditiveMetric(statistics=aggregation.item_statistics, score=aggregation.score_statistics)
    if getattr(aggregation, "__name__", "") == "mean" and getattr(aggregation, "__module__", "").startswith("lm_eval"):
        return MEAN
    return aggregation


class _Untestable(Exception):
    """Why a row gets no test (said in its ``paired`` field)."""


def _paired_values(base: dict | None, adapter: dict | None) -> tuple[list[Any], list[Any]]:
    if not base or not adapter:
        raise _Untestable("no per-document results (samples) for both models")
    if set(base) != set(adapter):
        raise _Untestable(f"the models ran on different documents ({len(base)} and {len(adapter)})")
    keys = sorted(base)
    if any(base[key][0] != adapter[key][0] for key in keys):
        raise _Untestable("the documents differ between the models (doc_hash)")
    return [base[key][1] for key in keys], [adapter[key][1] for key in keys]


class PairedTests:
    """Adds the paired-test fields (:data:`TEST_FIELDS`) to comparison rows.

    ``items[(model, seed)]`` holds :func:`collect_items` of that run, ``aggregations[task][metric]`` each leaf
    task's aggregation function (recorded while lm-eval loaded the tasks), ``values[(task, shots, metric, model,
    seed)]`` each run's reported value (to check that pooling a group's documents reproduces the group's number).
    """

    def __init__(
        self,
        items: Mapping[tuple[str, int], RunItems],
        aggregations: Mapping[str, Mapping[str, Callable]],
        values: Mapping[tuple, float],
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        base: str = "base",
    ) -> None:
        self.items, self.aggregations, self.values = items, aggregations, values
        self.resamples, self.seed, self.base = resamples, seed, base

    def _metric(self, task: str, shots: Any, label: str, model: str, seeds: list[int]):
        """The metric function of a row (None: none known), checking that a group's value is the mean of its
        members' documents, the only way pooling them tests the group's number."""
        metric = label.split(" (", 1)[0]
        pooled = [
            self.items.get((who, seed), {}).get((task, shots, label)) or {}
            for who in (self.base, model)
            for seed in seeds
        ]
        if all(leaf == task for documents in pooled for leaf, _ in documents):
            return _as_metric(self.aggregations.get(task, {}).get(metric))
        for documents, (who, seed) in zip(pooled, [(who, seed) for who in (self.base, model) for seed in seeds]):
            values = [value for _, value in documents.values()]
            reported = self.values.get((task, shots, label, who, seed))
            if reported is None or not _is_numeric(values) or abs(_mean(values) - reported) > 1e-9:
                raise _Untestable("a group whose value is not the mean of its documents: see its tasks' rows")
        return MEAN

    def test(self, task: str, shots: Any, label: str, model: str, seeds: list[int]) -> tuple[PairedResult, str]:
        runs = [
            _paired_values(
                self.items.get((self.base, seed), {}).get((task, shots, label)),
                self.items.get((model, seed), {}).get((task, shots, label)),
            )
            for seed in seeds
        ]
        documents = len(runs[0][0])
        if any(len(base) != documents for base, _ in runs):
            raise _Untestable("the seeds ran on different numbers of documents")
        metric = self._metric(task, shots, label, model, seeds)
        binary = all(_is_binary(base) and _is_binary(adapter) for base, adapter in runs)
        if len(seeds) == 1 and label.split(" (", 1)[0] in ACCURACY_METRICS and binary:
            base, adapter = runs[0]
            return mcnemar([bool(value) for value in adapter], [bool(value) for value in base]), (
                f"{documents} documents"
            )
        if metric is None:
            raise _Untestable("no aggregation known for this metric")
        if self.resamples == 0:
            raise _Untestable("bootstrap off (--bootstrap 0)")
        if metric is MEAN and not _is_numeric([value for base, adapter in runs for value in (*base, *adapter)]):
            raise _Untestable("per-document values are not numbers")
        result = paired_bootstrap(
            [adapter for _, adapter in runs],
            [base for base, _ in runs],
            metric,
            resamples=self.resamples,
            seed=self.seed,
        )
        paired = f"{documents} documents" if len(seeds) == 1 else f"{documents} documents × {len(seeds)} seeds (mean)"
        return result, paired

    def annotate(self, rows: list[dict[str, Any]], per_seed: bool = False) -> list[dict[str, Any]]:
        """Every row gets :data:`TEST_FIELDS` (None for the base); per-seed rows are tested seed by seed, the others
        over all the seeds they average. Holm's adjustment runs over the tested rows of ``rows``."""
        for row in rows:
            row.update({name: None for name in TEST_FIELDS})
            if row["model"] == self.base:
                continue
            seeds = [row["seed"]] if per_seed else [int(seed) for seed in str(row["seeds"]).split(",")]
            try:
                result, paired = self.test(row["task"], row["shots"], row["metric"], row["model"], seeds)
            except _Untestable as reason:
                row["paired"] = f"not tested: {reason}"
                continue
            row.update(
                p_value=result.p_value,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                test=result.test,
                paired=paired,
                ci_excludes_zero=result.excludes_zero,
            )
        for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
            row["p_holm"] = adjusted
        return rows
