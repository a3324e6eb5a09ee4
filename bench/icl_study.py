"""The paper's own setting on a real multilingual base model: in-context learning, 0- and k-shot with English
demonstrations (issue #31 §3). `bench/real_model.py run --study icl` runs it; this module holds its parts.

- **Which tasks.** The five ICL families the paper reports (XNLI, PAWS-X, XCOPA, XStoryCloze, XWinograd) in
  English, Chinese (the trained pair) and the languages no run trains on that ../shared/data holds. A test in
  another language than English gets English demonstrations where their file is there (the paper's cross-lingual
  setting: the released config has English demonstrations for the Chinese test), else its own language's (XCOPA:
  COPA's English train split is not in the shared data), and the report says which.
- **Screening.** The base model alone on every task at each shot count; per cell an exact (Clopper–Pearson) 95 %
  interval of its accuracy. A task whose interval contains chance (1 / number of choices) at every shot count
  can show neither a gain nor a loss on that many items: it is listed, and the adapters are not run on it.
- **Paired tests pooled over seeds.** Every variant and the base answer the same documents with the same
  demonstrations per seed, so a delta is tested by a paired bootstrap over documents in which a document carries
  its results of every seed (the statistic: the mean over seeds of the delta), as `afp evaluate` tests its mean
  rows; a group's number is the mean over its tasks of their accuracies, recomputed on every resample.
- **Verdicts.** A difference is shown when its test gives p < 0.05 *and* it is larger than the spread over seeds
  of the two groups (the fidelity reports' rule); otherwise "not shown".
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

GROUPS = ("en", "zh", "unseen")  # the trained pair's two languages, then every language no run trains on
ALPHA = 0.05
SUMMARY_TASK = "afp_cls_en-zh"  # CrossSum en→zh as published; no real zh→en set can be had offline
SUMMARY_METRICS = (
    ("rouge1", "cls_rouge1", "CrossSum en→zh ROUGE-1 ↑"),
    ("rougeL", "cls_rougeL", "CrossSum en→zh ROUGE-L ↑"),
)
PLOTTED = ("retrieval_best", "chrf", "icl_zh_5shot", "held_out_cit_loss")


@dataclass(frozen=True)
class ICLTask:
    """One benchmark in one test language; ``group`` places it in the report's averages."""

    family: str  # afp's task family: afp_xnli, afp_pawsx, ...
    lang: str  # the test language as the family names it
    group: str  # en | zh | unseen

    @property
    def key(self) -> str:
        return f"{self.family}_{self.lang}"


def _tasks(family: str, langs: str) -> tuple[ICLTask, ...]:
    return tuple(ICLTask(family, lang, lang if lang in ("en", "zh") else "unseen") for lang in langs.split())


# XCOPA en is left out: its test split is COPA's English, which ../shared/data does not hold.
CATALOGUE = (
    *_tasks("afp_xnli", "en zh"),
    *_tasks("afp_pawsx", "en zh de fr"),
    *_tasks("afp_xcopa", "zh it id vi et"),
    *_tasks("afp_xstorycloze", "en zh ar es id ru"),
    *_tasks("afp_xwinograd", "en zh"),
)


@dataclass(frozen=True)
class ICLSizes:
    """What the ICL study adds to a bench/real_model.py scale."""

    task_limit: int  # items per task, screening and measurement alike
    summary_limit: int  # CrossSum en→zh articles summarised (one-shot, the task's own)
    summary_tokens: int  # --max-gen-toks of a summary
    shots: tuple[int, ...] = (0, 5)  # the paper's k = 0 and 5


# ------------------------------------------------------------------------------------------------ demonstrations


@dataclass(frozen=True)
class TaskChoice:
    """The lm-eval task a benchmark runs as: its demonstration variant, and why that one."""

    task: ICLTask
    name: str  # afp_xcopa_zh_demo_native
    demo_lang: str  # en | native
    note: str


def _split_held(split: dict, data_dir: Path) -> bool:
    """A split is held when every file of one of its layouts is under ``data_dir`` (tasks/afp_task_common.py)."""
    layouts = split.get("layouts") or [split]
    for layout in layouts:
        parts = [layout["source"], layout["target"]] if "source" in layout else [layout]
        if all((data_dir / part["local"]).is_file() for part in parts):
            return True
    return False


def choose_demonstrations(task: ICLTask, data_dir: Path, include_path: Path) -> TaskChoice | None:
    """English demonstrations where their files are there, else the test language's; None when the test split
    or both demonstration splits are missing."""
    for demo_lang in ("en", "native"):
        name = f"{task.key}_demo_{demo_lang}"
        config = yaml.safe_load((include_path / task.family / f"{name}.yaml").read_text(encoding="utf-8"))
        splits = config["dataset_kwargs"]["splits"]
        if not _split_held(splits["test"], data_dir):
            return None
        if _split_held(splits["demos"], data_dir):
            note = (
                "English demonstrations"
                if demo_lang == "en"
                else "native demonstrations (the English demonstrations' file is not in the data folder)"
            )
            return TaskChoice(task, name, demo_lang, note)
    return None


def task_choices(data_dir: Path, only: Sequence[str] | None = None) -> dict[str, TaskChoice]:
    """The catalogue's tasks that the data folder can run, by lm-eval name (``only``: catalogue keys such as
    afp_xnli_zh, to run fewer)."""
    from afp_cli.evaluation.tasks import default_include_path

    include_path = Path(default_include_path())
    unknown = set(only or ()) - {task.key for task in CATALOGUE}
    if unknown:
        raise SystemExit(f"--icl-tasks: not in the catalogue: {', '.join(sorted(unknown))}")
    picked = [task for task in CATALOGUE if not only or task.key in only]
    choices = [choose_demonstrations(task, Path(data_dir), include_path) for task in picked]
    return {choice.name: choice for choice in choices if choice is not None}


# ------------------------------------------------------------------------------------------------ screening


def _log_binomial(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space (exact enough for any n a benchmark has)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    return min(1.0, sum(math.exp(_log_binomial(i, n, p)) for i in range(k + 1)))


def _bisect(function, target: float, decreasing: bool) -> float:
    low, high = 0.0, 1.0
    for _ in range(80):  # 2^-80: far below any difference a report shows
        middle = (low + high) / 2
        above = function(middle) > target
        if above == decreasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval: the p whose upper tail P(X ≥ k) is α/2 (low) and whose lower tail P(X ≤ k)
    is α/2 (high); 0 and 1 at the ends. Conservative: it covers at least ``confidence`` for every p."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    tail = (1 - confidence) / 2
    low = 0.0 if successes == 0 else _bisect(lambda p: 1 - binomial_cdf(successes - 1, trials, p), tail, False)
    high = 1.0 if successes == trials else _bisect(lambda p: binomial_cdf(successes, trials, p), tail, True)
    return low, high


@dataclass(frozen=True)
class ScreenCell:
    """The base model on one task at one shot count."""

    task: str
    shots: int
    correct: int
    items: int
    choices: int

    @property
    def chance(self) -> float:
        return 1 / self.choices

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.correct, self.items)

    @property
    def at_chance(self) -> bool:
        """Not above chance: the interval reaches down to chance or below it. A score significantly *below* chance
        (XCOPA id/vi 0-shot on Gemma 3 270M: 0.39, 0.38) is a bias of the prompt or the scoring (one choice favoured
        whatever the item), not skill: an adapter could "gain" there by losing the bias, so it counts as at chance."""
        return self.interval[0] <= self.chance

    @property
    def below_chance(self) -> bool:
        return self.interval[1] < self.chance


@dataclass(frozen=True)
class Screening:
    """Per task: its cells, and whether the adapters are measured on it."""

    cells: dict[str, list[ScreenCell]]
    kept_by_request: frozenset[str] = field(default_factory=frozenset)

    def at_chance(self, task: str) -> bool:
        """At chance at every shot count: no gain and no loss can show on these items."""
        return all(cell.at_chance for cell in self.cells[task])

    @property
    def measured(self) -> list[str]:
        return [task for task in self.cells if not self.at_chance(task) or task in self.kept_by_request]

    @property
    def skipped(self) -> list[str]:
        return [task for task in self.cells if task not in self.measured]


def outcomes(eval_dir: Path, model: str, shots: int) -> dict[str, dict[int, float]]:
    """Per task, per document: the accuracy (0/1) lm-eval logged for ``model`` at ``shots`` (one seed's run)."""
    folder = eval_dir / "raw" / model / f"{shots}shot"
    found = {}
    for path in sorted(folder.glob("samples_*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        found[path.stem.removeprefix("samples_")] = {int(r["doc_id"]): float(r["acc"]) for r in records}
    return found


def choices_of(eval_dir: Path, model: str, shots: int) -> dict[str, int]:
    """The number of answer choices of each task (lm-eval's requests per document)."""
    folder = eval_dir / "raw" / model / f"{shots}shot"
    found = {}
    for path in sorted(folder.glob("samples_*.jsonl")):
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        found[path.stem.removeprefix("samples_")] = len(first["arguments"])
    return found


def read_screening(eval_dir: Path, tasks: Sequence[str], shots: Sequence[int], keep: Sequence[str] = ()) -> Screening:
    """The base model's cells from its screening run (afp evaluate's raw samples), in the order of ``tasks``."""
    cells: dict[str, list[ScreenCell]] = {task: [] for task in tasks}
    for k in shots:
        choices = choices_of(eval_dir, "base", k)
        for task, documents in outcomes(eval_dir, "base", k).items():
            if task not in cells:
                continue
            correct = round(sum(documents.values()))
            cells[task].append(ScreenCell(task, k, correct, len(documents), choices[task]))
    missing = [task for task, found in cells.items() if len(found) != len(shots)]
    if missing:
        raise SystemExit(f"{eval_dir}: no screening result for {', '.join(missing)}")
    return Screening(cells, frozenset(keep))


def screening_json(screening: Screening) -> dict:
    return {
        "measured": screening.measured,
        "at_chance": screening.skipped,
        "kept_by_request": sorted(screening.kept_by_request),
        "cells": [
            {
                "task": cell.task,
                "shots": cell.shots,
                "correct": cell.correct,
                "items": cell.items,
                "chance": cell.chance,
                "accuracy": cell.correct / cell.items,
                "ci_low": cell.interval[0],
                "ci_high": cell.interval[1],
                "at_chance": cell.at_chance,
            }
            for cells in screening.cells.values()
            for cell in cells
        ],
    }


# ------------------------------------------------------------------------------------------------ paired tests


def group_metric(task_count: int):
    """The mean over tasks of their accuracies, as an additive metric: an item is (task index, 0/1), its
    statistics a row of [correct per task] + [count per task]."""
    from afp_cli.statistics import AdditiveMetric

    def rows(items):
        table = []
        for index, value in items:
            row = [0.0] * (2 * task_count)
            row[index], row[task_count + index] = float(value), 1.0
            table.append(row)
        return table

    def score(summed):
        means = [summed[i] / summed[task_count + i] for i in range(task_count) if summed[task_count + i] > 0]
        return sum(means) / len(means)

    return AdditiveMetric(rows, score)


@dataclass(frozen=True)
class PooledDelta:
    """``first`` − ``second`` on a set of tasks at one shot count, over every seed."""

    first: str
    second: str
    tasks: tuple[str, ...]
    shots: int
    delta: float  # mean over seeds of the difference of the two mean-over-tasks accuracies
    ci_low: float
    ci_high: float
    p_value: float
    documents: int
    seeds: int


def pooled_delta(
    per_seed: Sequence[dict], first: str, second: str, tasks: Sequence[str], shots: int, resamples: int = 1000
) -> PooledDelta:
    """``per_seed[i][model][shots][task][doc_id]`` = 0/1. Documents answered in every seed by both models are
    paired; one bootstrap resample draws documents, each keeping its results of every seed."""
    from afp_cli.statistics import paired_bootstrap

    keys = sorted(
        (index, doc)
        for index, task in enumerate(tasks)
        for doc in set.intersection(*(set(run[model][shots][task]) for run in per_seed for model in (first, second)))
    )
    runs = {
        model: [[(index, run[model][shots][tasks[index]][doc]) for index, doc in keys] for run in per_seed]
        for model in (first, second)
    }
    result = paired_bootstrap(runs[first], runs[second], group_metric(len(tasks)), resamples=resamples, seed=0)
    return PooledDelta(
        first, second, tuple(tasks), shots, result.delta, result.ci_low, result.ci_high, result.p_value, len(keys),
        len(per_seed),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Claim:
    better: str
    worse: str
    group: str
    kind: str = "gain"  # gain: the paper says better > worse; no-gain: the paper says better does not help


def icl_claims(variants: Sequence[str], layer_variant: str | None) -> list[Claim]:
    """The paper's claims on ICL, per group (Table 2/3 and its Finding: MCL + CIT > CIT > base; MCL alone does
    not help; the languages never trained on gain too), and the measured-layer question."""
    claims = []
    for group in GROUPS:
        claims += [Claim("cit", "base", group), Claim("mcl+cit", "cit", group), Claim("mcl+cit", "base", group)]
        claims.append(Claim("mcl", "base", group, "no-gain"))
        if layer_variant:
            claims.append(Claim(layer_variant, "mcl+cit", group))
    return [claim for claim in claims if claim.better in variants and claim.worse in variants]


def verdict(claim: Claim, delta: float, p_value: float, spread: float | None) -> str:
    """Shown: p < α and the difference beyond the bigger spread over seeds (with one seed, the test alone)."""
    beyond = spread is None or abs(delta) > spread
    significant = p_value < ALPHA and beyond
    if claim.kind == "no-gain":
        if significant:
            return "contradicted: it helps" if delta > 0 else "holds: it hurts"
        return "holds: no gain shown"
    if not significant:
        return "not shown"
    return "shown" if delta > 0 else "reversed"


def spread_of(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


# ------------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class StudyData:
    """What the ICL section is computed from: per seed, per variant label, per shot count, per task, per
    document, the 0/1 accuracy; which task belongs to which group; the screening."""

    per_seed: list[dict]
    seeds: list[int]
    variants: list[str]  # base first
    shots: list[int]
    groups: dict[str, list[str]]  # group -> measured tasks (lm-eval names)
    screening: Screening
    choices: dict[str, TaskChoice]  # lm-eval name -> its choice
    layer_variant: str | None = None  # mcl+cit@N: the measured layer

    def accuracy(self, seed_index: int, variant: str, shots: int, task: str) -> float:
        documents = self.per_seed[seed_index][variant][shots][task]
        return sum(documents.values()) / len(documents)

    def group_mean(self, seed_index: int, variant: str, shots: int, group: str) -> float:
        return statistics.fmean(self.accuracy(seed_index, variant, shots, task) for task in self.groups[group])


def seed_outcomes(folder: Path, rows: list[dict], labels: list[str], shots, measured: list[str]) -> dict:
    """One seed's per-document accuracies, by variant: ``{variant: {shots: {task: {doc_id: 0/1}}}}``."""
    if not measured:
        return {row["variant"]: {k: {} for k in shots} for row in rows}
    return {row["variant"]: {k: outcomes(folder / "icl", label, k) for k in shots} for row, label in zip(rows, labels)}


def summary_scores(folder: Path, label: str) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L of one model's CrossSum summaries (afp evaluate's comparison.json)."""
    rows = json.loads((folder / "comparison.json").read_text())["rows"]
    found = {}
    for metric, key, _ in SUMMARY_METRICS:
        found[key] = next(r["value"] for r in rows if r["model"] == label and r["metric"].split(" (")[0] == metric)
    return found


def generation_tests(seed_folders: dict[int, Path], names: dict[str, str]) -> list[dict]:
    """Every adapter row of the seeds' translation and summary comparisons with afp evaluate's own paired test
    (a paired bootstrap over sentences, per seed): the deltas the ICL averages do not cover."""
    found = []
    for seed, folder in seed_folders.items():
        for part in ("eval", "summary"):
            path = folder / part / "comparison.json"
            for row in json.loads(path.read_text())["rows"] if path.is_file() else []:
                if row.get("p_value") is not None and row["metric"].split(" (")[0] in ("chrfpp", "bleu", "rouge1"):
                    found.append({**row, "seed": seed, "variant": names.get(row["model"], row["model"])})
    return found


def study_data(per_seed, rows, seeds, shots, screening: Screening, choices, layer_variant) -> StudyData:
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    groups = {
        group: [task for task in screening.measured if task in choices and choices[task].task.group == group]
        for group in GROUPS
    }
    return StudyData(per_seed, list(seeds), variants, list(shots), groups, screening, choices, layer_variant)


def report_metrics(real_metrics: tuple, data: StudyData) -> tuple:
    """The real-model columns without the main study's 0-shot PAWS-X / XCOPA zh (the ICL columns replace them)."""
    kept = tuple(metric for metric in real_metrics if metric[0] not in ("pawsx_zh", "xcopa_zh"))
    groups = [group for group, tasks in data.groups.items() if tasks]
    summary = tuple((key, title, True) for _, key, title in SUMMARY_METRICS)
    return kept + icl_metric_columns(groups, data.shots) + summary


def spread_claims(paper_claims: tuple, layer_variant: str | None) -> tuple:
    """The fidelity report's spread-only claims on the other metrics, and the measured layer against layer 1."""
    extra = () if not layer_variant else tuple((layer_variant, "mcl+cit", m) for m in ("retrieval_best", "chrf"))
    return paper_claims + (("mcl+cit", "cit", "cls_rouge1"),) + extra


def report_context(args, scale, depth: int, title: str, load_at_start, seconds: int) -> dict:
    import datetime
    import os
    import platform
    import shlex
    import sys

    sizes = scale.icl
    return {
        "study": "icl",
        "title": title,
        "quick": False,
        "seeds": args.seed,
        "scale": {"name": args.scale, "retrieval_pairs": scale.held_out, "steps": scale.steps},
        "base_model": str(args.model),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, device {args.device}, {args.threads} threads",
        "load_average_at_start": load_at_start,
        "date": datetime.date.today().isoformat(),
        "seconds": seconds,
        "command": shlex.join(["python", "bench/real_model.py", *sys.argv[1:]]),
        "description": (
            f"Mean ± sample standard deviation over seeds (none with one seed). {scale.steps} steps × batch "
            f"{scale.batch_size} on {scale.align_pairs} Tatoeba pairs (translation build, both directions), "
            f"max_length {scale.max_length}; MCL pooled at layer 1 (`last-1`, official) or `@N` of {depth}. "
            f"Retrieval: top-1 among {scale.held_out} held-out pairs (chance {1 / scale.held_out:.3f}), at the "
            f"pooling layer and the best layer. chrF++/BLEU: {scale.translate_limit} held-out sentences per "
            f"direction and shot count (0, 1). Language rate: {scale.rate_limit} questions per direction and shot "
            f"count. ICL: {sizes.task_limit} items per task, {'/'.join(map(str, sizes.shots))}-shot, one fixed "
            f"set of demonstrations per seed, accuracy averaged over the group's tasks above chance (below). "
            f"CrossSum en→zh: {sizes.summary_limit} articles, one-shot, at most {sizes.summary_tokens} tokens "
            "(no real zh→en set offline). Evaluation dtype "
            f"{scale.eval_dtype}."
        ),
        "per_seed_columns": ["variant", "seed", "pooling", "retrieval_top1", "best_layer", "retrieval_best",
            "chrf_0shot_zh_en", "chrf_0shot_en_zh", "language_rate_0shot_en_zh", "held_out_cit_loss",
            *[f"icl_{g}_{k}shot" for g in GROUPS for k in sizes.shots], "cls_rouge1", "align_seconds"],
    }  # fmt: skip


def row_metrics(data: StudyData, seed_index: int, variant: str) -> dict[str, float]:
    """The per-seed row's ICL keys (``icl_zh_5shot``: the mean accuracy over zh's measured tasks)."""
    return {
        f"icl_{group}_{shots}shot": data.group_mean(seed_index, variant, shots, group)
        for group, tasks in data.groups.items()
        if tasks
        for shots in data.shots
    }


def icl_metric_columns(groups: Sequence[str], shots: Sequence[int]) -> tuple:
    """(key, title, higher is better) for bench/fidelity_report.py's tables."""
    return tuple((f"icl_{group}_{k}shot", f"ICL {group} {k}-shot ↑", True) for group in groups for k in shots)


def _mean_spread(values: Sequence[float]) -> str:
    spread = spread_of(values)
    return f"{statistics.fmean(values):.3f}" + ("" if spread is None else f" ± {spread:.3f}")


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def analyse(data: StudyData, resamples: int = 1000) -> dict:
    """Group deltas against base, the claims' verdicts and the per-task appendix, as JSON-able dicts."""
    from afp_cli.statistics import holm

    seeds = range(len(data.per_seed))
    group_rows = []
    for group, tasks in data.groups.items():
        for shots in data.shots:
            for variant in data.variants:
                values = [data.group_mean(i, variant, shots, group) for i in seeds] if tasks else []
                row = {"group": group, "shots": shots, "variant": variant, "tasks": len(tasks), "values": values}
                if tasks and variant != "base":
                    test = pooled_delta(data.per_seed, variant, "base", tasks, shots, resamples)
                    row.update(delta=test.delta, ci_low=test.ci_low, ci_high=test.ci_high, p_value=test.p_value)
                group_rows.append(row)
    for row, adjusted in zip(group_rows, holm([row.get("p_value") for row in group_rows])):
        row["p_holm"] = adjusted
    claims = []
    for claim in icl_claims(data.variants, data.layer_variant):
        tasks = data.groups.get(claim.group) or []
        for shots in data.shots:
            if not tasks:
                claims.append({**claim.__dict__, "shots": shots, "verdict": "no task above chance in this group"})
                continue
            test = pooled_delta(data.per_seed, claim.better, claim.worse, tasks, shots, resamples)
            spreads = [
                spread_of([data.group_mean(i, variant, shots, claim.group) for i in seeds])
                for variant in (claim.worse, claim.better)
            ]
            spread = None if None in spreads else max(spreads)
            claims.append(
                {
                    **claim.__dict__,
                    "shots": shots,
                    "delta": test.delta,
                    "p_value": test.p_value,
                    "spread": spread,
                    "documents": test.documents,
                    "verdict": verdict(claim, test.delta, test.p_value, spread),
                }
            )
    task_rows = []
    for task in (task for tasks in data.groups.values() for task in tasks):
        for shots in data.shots:
            for variant in data.variants:
                row = {
                    "task": task,
                    "shots": shots,
                    "variant": variant,
                    "values": [data.accuracy(i, variant, shots, task) for i in seeds],
                }
                if variant != "base":
                    test = pooled_delta(data.per_seed, variant, "base", [task], shots, resamples)
                    row.update(delta=test.delta, p_value=test.p_value, documents=test.documents)
                task_rows.append(row)
    for row, adjusted in zip(task_rows, holm([row.get("p_value") for row in task_rows])):
        row["p_holm"] = adjusted
    return {"groups": group_rows, "claims": claims, "tasks": task_rows}


def claim_text(claim: dict) -> str:
    relation = "does not beat" if claim["kind"] == "no-gain" else ">"
    return f"{claim['better']} {relation} {claim['worse']}"


def summary_lines(claims: list[dict]) -> list[str]:
    """One plain sentence per claim: in how many (group, shots) cells the test and the spread support it."""
    lines = []
    for text in dict.fromkeys(claim_text(claim) for claim in claims):
        cells = [claim for claim in claims if claim_text(claim) == text]
        by_verdict: dict[str, list[str]] = {}
        for claim in cells:
            by_verdict.setdefault(claim["verdict"], []).append(f"{claim['group']} {claim['shots']}-shot")
        parts = "; ".join(f"{verdict_name} in {', '.join(where)}" for verdict_name, where in by_verdict.items())
        lines.append(f"- **{text}** (ICL accuracy, {len(cells)} cells): {parts}.")
    return lines


def _by_note(choices: dict[str, TaskChoice]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, choice in choices.items():
        grouped.setdefault(choice.note, []).append(name)
    return grouped


def generation_table(generation: list[dict]) -> str:
    """One row per (task, shots, metric, model), one column per seed: "Δ (p)"."""
    from afp_cli.report import markdown_table

    rows: dict[tuple, dict] = {}
    seeds = list(dict.fromkeys(f"seed {row['seed']}" for row in generation))
    for row in generation:
        key = (row["task"], row["shots"], row["metric"], row["variant"])
        cells = rows.setdefault(key, dict(zip(("task", "shots", "metric", "model"), key)))
        cells[f"seed {row['seed']}"] = f"{row['delta_vs_base']:+.2f} (p {_p(row['p_value'])})"
    return markdown_table(list(rows.values()), ["task", "shots", "metric", "model", *seeds])


def timing_table(timings: dict[str, dict]) -> str:
    from afp_cli.report import markdown_table

    columns = list(dict.fromkeys(column for per_seed in timings.values() for column in per_seed))
    rows = [{"phase": name, **{c: round(v) for c, v in per_seed.items()}} for name, per_seed in timings.items()]
    return markdown_table(rows, ["phase", *columns])


def render_section(data: StudyData, analysis: dict, timings: dict[str, dict], generation: list[dict]) -> str:
    """The ICL part of results.md: screening, group averages with paired tests, verdicts, per-task appendix."""
    from afp_cli.report import markdown_table

    screening_rows = []
    for task, cells in data.screening.cells.items():
        row = {"task": task, "demonstrations": data.choices[task].demo_lang if task in data.choices else "–"}
        for cell in cells:
            low, high = cell.interval
            row[f"{cell.shots}-shot"] = f"{cell.correct}/{cell.items} [{low:.2f}, {high:.2f}]"
            row["chance"] = f"{cell.chance:.2f}"
        row["measured"] = (
            "yes (kept by request)"
            if task in data.screening.kept_by_request and data.screening.at_chance(task)
            else (
                "no: below chance (a bias, not skill)" if any(cell.below_chance for cell in cells) else "no: at chance"
            )
            if data.screening.at_chance(task)
            else "yes"
        )
        screening_rows.append(row)
    shot_columns = [f"{k}-shot" for k in data.shots]
    skipped = data.screening.skipped
    lines = [
        "## In-context learning (the paper's setting)",
        "",
        "### Screening: where the base model scores above chance",
        "",
        "The base model alone, seed of the first run, per task and shot count: correct / items and the exact "
        "(Clopper–Pearson) 95 % interval of its accuracy. A task whose interval contains chance at every shot "
        "count can show neither a gain nor a loss on these items: the adapters are not run on it.",
        "",
        markdown_table(screening_rows, ["task", "demonstrations", *shot_columns, "chance", "measured"]),
        "Not above chance at any shot count (at chance, or below it: a bias of the prompt or the scoring, not skill), "
        "can show neither a gain nor a loss: " + (", ".join(skipped) if skipped else "none") + ".",
        "",
        "Demonstrations: "
        + "; ".join(f"{note}: {', '.join(names)}" for note, names in _by_note(data.choices).items())
        + ".",
        "",
        "### Accuracy averaged over the measured tasks of each group",
        "",
        "Mean ± spread (sample standard deviation) over seeds of the mean accuracy over the group's tasks; Δ base: "
        "the mean over seeds of the difference, its 95 % interval and p from a paired bootstrap over documents "
        "(a document keeps its results of every seed), Holm-adjusted over this table.",
        "",
    ]
    group_table = []
    for row in (row for row in analysis["groups"] if row["tasks"]):
        cells = {
            "group": f"{row['group']} ({row['tasks']} task{'s' if row['tasks'] != 1 else ''})",
            "shots": row["shots"],
            "model": row["variant"],
            "accuracy": _mean_spread(row["values"]) if row["values"] else "–",
        }
        if "delta" in row:
            cells["Δ base [95 % CI]"] = f"{row['delta']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
            cells["p"], cells["p (Holm)"] = _p(row["p_value"]), _p(row["p_holm"])
        group_table.append(cells)
    empty = [group for group, tasks in data.groups.items() if not tasks]
    lines += [
        markdown_table(group_table, ["group", "shots", "model", "accuracy", "Δ base [95 % CI]", "p", "p (Holm)"]),
        *([f"No task above chance, so no average: {', '.join(empty)}.", ""] if empty else []),
        "### The paper's claims on in-context learning",
        "",
        f"Shown: paired p < {ALPHA} and the difference larger than the bigger spread over seeds of the two "
        "models (with one seed, the test alone). Otherwise not shown: the items and seeds cannot tell.",
        "",
        *summary_lines(analysis["claims"]),
        "",
        markdown_table(
            [
                {
                    "claim": claim_text(claim),
                    "group": claim["group"],
                    "shots": claim["shots"],
                    "difference": "–" if "delta" not in claim else f"{claim['delta']:+.3f}",
                    "p": "–" if "p_value" not in claim else _p(claim["p_value"]),
                    "spread": "–" if claim.get("spread") is None else f"{claim['spread']:.3f}",
                    "verdict": claim["verdict"],
                }
                for claim in analysis["claims"]
                if "delta" in claim
            ],
            ["claim", "group", "shots", "difference", "p", "spread", "verdict"],
        ),
        "### Translation and summarization: every delta with its paired test",
        "",
        "The adapter minus base per seed, with the p of afp evaluate's paired bootstrap over sentences (articles).",
        "",
        generation_table(generation),
        "### Wall time per phase (seconds; 0 or – : kept from an earlier run, or not run)",
        "",
        timing_table(timings),
        "### Appendix: every measured task",
        "",
        markdown_table(
            [
                {
                    "task": row["task"],
                    "shots": row["shots"],
                    "model": row["variant"],
                    "accuracy": _mean_spread(row["values"]),
                    "Δ base": "–" if "delta" not in row else f"{row['delta']:+.3f}",
                    "p": "–" if "p_value" not in row else _p(row["p_value"]),
                    "p (Holm)": "–" if row.get("p_holm") is None else _p(row["p_holm"]),
                }
                for row in analysis["tasks"]
            ],
            ["task", "shots", "model", "accuracy", "Δ base", "p", "p (Holm)"],
        ),
    ]
    return "\n".join(lines)
