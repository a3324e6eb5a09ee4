"""Intervals and paired tests for "is this difference real?": two models scored on the same items.

Used by `afp evaluate` (adapter vs base on the same documents) and `afp analyze language-rate` (the same
questions). Every function here is plain Python (numpy for the bootstrap only) and is tested against scipy and
hand-computed cases (tests/test_significance.py).

- :func:`wilson_interval`: one binomial proportion (Wilson 1927).
- :func:`mcnemar`: two paired binary outcomes: the exact McNemar test (a two-sided binomial test of the discordant
  items, 1/2 each way under the null) and Newcombe's interval for the difference of the paired proportions
  (square-and-add, his method 10: Newcombe 1998, Stat Med 17:2635, with his correction of the correlation
  estimate; the interval Fagerland, Lydersen and Laake 2014 recommend as "Newcombe square-and-add").
- :func:`paired_bootstrap`: any metric, a corpus one included (BLEU, chrF++: recomputed on every resample): the
  same resampled items for both models, a percentile interval, and a two-sided p-value from the resampled
  differences shifted to the null.
- :func:`holm`: Holm's step-down adjustment of several p-values.

The exact binomial tail is written by hand (integer arithmetic with ``math.comb``, exact for any number of items)
rather than imported from scipy: scipy reaches afp only through lm-eval's scikit-learn, not as afp's own
dependency, and the four lines need nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import NormalDist
from typing import Any

WILSON_Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
DEFAULT_RESAMPLES = 1000


def normal_quantile(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 %, 100 % and small n)."""
    if trials <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    share = successes / trials
    denominator = 1 + z * z / trials
    center = (share + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 % and 100 % the bound is exactly the share; rounding would otherwise leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == trials else min(1.0, center + half_width)
    return low, high


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of ``first`` against ``second`` on the same items: ``delta`` = first − second."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "mcnemar-exact" or "paired-bootstrap"
    items: int  # paired items (documents, questions)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0


def mcnemar_exact_p(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts: under the null each discordant item is right
    for either model with probability 1/2, so p = 2 · P(X ≤ min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1
    (no discordant item: 1)."""
    if first_only < 0 or second_only < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = first_only + second_only
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(first_only, second_only) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


def paired_proportion_interval(
    both: int, first_only: int, second_only: int, neither: int, z: float = WILSON_Z_95
) -> tuple[float, float]:
    """Newcombe's square-and-add interval (method 10) for p_first − p_second of paired binary outcomes.

    p_first = (both + first_only) / n, p_second = (both + second_only) / n, each with its Wilson interval
    (l1, u1), (l2, u2); the limits are Δ − √((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²) and
    Δ + √((u1 − p1)² − 2φ(u1 − p1)(p2 − l2) + (p2 − l2)²), φ the correlation of the two outcomes estimated as
    Newcombe corrects it: A = both·neither − first_only·second_only, φ = (A − n/2)/√(marginals) when A > n/2,
    0 when 0 ≤ A ≤ n/2, A/√(marginals) when A < 0, and 0 when a marginal is empty.
    """
    n = both + first_only + second_only + neither
    if n <= 0:
        raise ValueError("the interval needs at least one paired item")
    first_right, second_right = both + first_only, both + second_only
    p1, p2 = first_right / n, second_right / n
    l1, u1 = wilson_interval(first_right, n, z)
    l2, u2 = wilson_interval(second_right, n, z)
    marginals = first_right * (n - first_right) * second_right * (n - second_right)
    association = both * neither - first_only * second_only
    if marginals == 0 or 0 <= association <= n / 2:
        phi = 0.0
    elif association > n / 2:
        phi = (association - n / 2) / math.sqrt(marginals)
    else:
        phi = association / math.sqrt(marginals)
    delta = p1 - p2
    low = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = delta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, low), min(1.0, high)


def mcnemar(first: Sequence[bool], second: Sequence[bool], confidence: float = 0.95) -> PairedResult:
    """Exact McNemar test and Newcombe's interval for two models' right/wrong on the same items (in the same
    order): ``delta`` = share right of ``first`` − share right of ``second``."""
    if len(first) != len(second):
        raise ValueError(f"paired outcomes of different lengths: {len(first)} and {len(second)}")
    if not first:
        raise ValueError("a paired test needs at least one item")
    both = sum(1 for a, b in zip(first, second) if a and b)
    first_only = sum(1 for a, b in zip(first, second) if a and not b)
    second_only = sum(1 for a, b in zip(first, second) if b and not a)
    neither = len(first) - both - first_only - second_only
    low, high = paired_proportion_interval(both, first_only, second_only, neither, normal_quantile(confidence))
    return PairedResult(
        delta=(first_only - second_only) / len(first),
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact_p(first_only, second_only),
        test="mcnemar-exact",
        items=len(first),
        details={"first_only": first_only, "second_only": second_only, "both": both, "neither": neither},
    )


@dataclass(frozen=True)
class AdditiveMetric:
    """A metric computed from per-item statistics that add up: ``score(sum of statistics(items))``.

    A mean is ``[[value, 1], ...]`` -> ``s[0] / s[1]``; corpus BLEU is its sentences' n-gram counts summed, then
    the BLEU formula. The bootstrap then sums each resample's rows instead of recomputing from the items.
    """

    statistics: Callable[[list[Any]], Sequence[Sequence[float]]]
    score: Callable[[Sequence[float]], float]

    def __call__(self, items: list[Any]) -> float:
        import numpy as np

        return float(self.score(np.asarray(self.statistics(items)).sum(axis=0)))


def paired_bootstrap(
    first_runs: Sequence[Sequence[Any]],
    second_runs: Sequence[Sequence[Any]],
    metric: Callable[[list[Any]], float] | AdditiveMetric,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Paired bootstrap over items of ``metric(first) − metric(second)``, the metric recomputed on every resample.

    ``first_runs`` and ``second_runs`` hold one list of per-item values per run (a seed), item i of every list
    being the same item; one resample draws n item indices with replacement (numpy's default generator with
    ``seed``) and applies them to every run of both models, so an item keeps its results across runs. The statistic
    is the mean over runs of metric(first run) − metric(second run) (one run: just the difference). The interval
    is the percentile interval of the resampled differences; the two-sided p-value is
    (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1): the resampled differences shifted to a null of no difference, with the +1
    that keeps a finite number of resamples from claiming p = 0 (as sacrebleu's paired tests do).
    """
    import numpy as np

    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {resamples}")
    if not first_runs or len(first_runs) != len(second_runs):
        raise ValueError("both models need the same number of runs, at least one")
    lengths = {len(run) for run in (*first_runs, *second_runs)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"every run needs the same items, at least one (lengths {sorted(lengths)})")
    count = lengths.pop()

    if isinstance(metric, AdditiveMetric):  # statistics once per item; a resample sums its rows
        tables = [
            (np.asarray(metric.statistics(list(first))), np.asarray(metric.statistics(list(second))))
            for first, second in zip(first_runs, second_runs)
        ]

        def statistic(indices) -> float:
            differences = [
                metric.score(first[indices].sum(axis=0)) - metric.score(second[indices].sum(axis=0))
                for first, second in tables
            ]
            return float(sum(differences) / len(differences))
    else:

        def statistic(indices) -> float:
            differences = [
                metric([first[i] for i in indices]) - metric([second[i] for i in indices])
                for first, second in zip(first_runs, second_runs)
            ]
            return sum(differences) / len(differences)

    observed = statistic(np.arange(count))
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, count, size=(resamples, count))
    deltas = np.array([statistic(row) for row in draws])
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    extreme = int(np.sum(np.abs(deltas - observed) >= abs(observed)))
    return PairedResult(
        delta=observed,
        ci_low=float(low),
        ci_high=float(high),
        p_value=min(1.0, (extreme + 1) / (resamples + 1)),
        test="paired-bootstrap",
        items=count,
        details={"resamples": resamples, "seed": seed, "runs": len(first_runs)},
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes max over j ≤ i of (m − j + 1)·p_(j),
    at most 1; ``None`` (no test) stays ``None`` and does not count in m."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted
