"""Paired tests (afp_cli/statistics.py) against scipy and hand-computed cases, and their use on comparison rows."""

from __future__ import annotations

import random

import pytest

from afp_cli.statistics import (
    AdditiveMetric,
    holm,
    mcnemar,
    mcnemar_exact_p,
    paired_bootstrap,
    paired_proportion_interval,
)


@pytest.mark.parametrize(
    ("first_only", "second_only", "expected"),
    [
        (0, 0, 1.0),  # no discordant item: nothing to test
        (5, 0, 2 / 32),  # 2 · P(X ≤ 0), X ~ Bin(5, 1/2)
        (1, 4, 2 * (1 + 5) / 32),  # 2 · (C(5,0) + C(5,1)) / 2^5
        (3, 3, 1.0),  # a tie: 2 · P(X ≤ 3) > 1, capped
        (0, 12, 2 / 4096),
    ],
)
def test_mcnemar_exact_p_by_hand(first_only, second_only, expected):
    assert mcnemar_exact_p(first_only, second_only) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_p_matches_scipy_binomtest_on_random_tables():
    stats = pytest.importorskip("scipy.stats")
    generator = random.Random(7)
    for _ in range(200):
        first_only, second_only = generator.randint(0, 60), generator.randint(0, 60)
        discordant = first_only + second_only
        expected = 1.0 if discordant == 0 else stats.binomtest(min(first_only, second_only), discordant, 0.5).pvalue
        assert mcnemar_exact_p(first_only, second_only) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    # large counts stay exact (integer arithmetic), where a float sum of tiny terms would underflow
    assert mcnemar_exact_p(900, 1100) == pytest.approx(stats.binomtest(900, 2000, 0.5).pvalue, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_two_runs_differing_on_exactly_k_items_give_the_exact_mcnemar_p(k):
    generator = random.Random(k)
    base = [generator.random() < 0.5 for _ in range(60)]
    wrong = [index for index, right in enumerate(base) if not right]
    adapter = list(base)
    for index in wrong[:k]:  # the adapter gets exactly k more items right, nothing else changes
        adapter[index] = True
    result = mcnemar(adapter, base)
    assert result.p_value == pytest.approx(2 ** (1 - k))  # 2 · P(X ≤ 0), X ~ Bin(k, 1/2)
    assert result.delta == pytest.approx(k / 60)
    assert result.details["first_only"] == k and result.details["second_only"] == 0
    # k flips each way: the same accuracy, p = 1
    both_ways = list(adapter)
    right = [index for index, value in enumerate(base) if value]
    for index in right[:k]:
        both_ways[index] = False
    assert mcnemar(both_ways, base).p_value == 1.0 and mcnemar(both_ways, base).delta == 0.0


def test_newcombe_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (ch. 8), complete response before and
    # after consolidation therapy (Cavo et al., 2012): table [[59, 6], [16, 80]], "estimate = -0.0621 (95% CI
    # -0.1186 to -0.0046)" for the Newcombe square-and-add interval (R package contingencytables, tests/test-ch8).
    low, high = paired_proportion_interval(both=59, first_only=6, second_only=16, neither=80)
    assert (6 - 16) / 161 == pytest.approx(-0.0621, abs=5e-5)
    assert low == pytest.approx(-0.1186, abs=5e-5) and high == pytest.approx(-0.0046, abs=5e-5)


def test_newcombe_interval_is_symmetric_and_within_bounds():
    low, high = paired_proportion_interval(both=10, first_only=4, second_only=4, neither=10)
    assert low == pytest.approx(-high) and low < 0 < high
    low, high = paired_proportion_interval(both=0, first_only=20, second_only=0, neither=0)  # every item flips
    assert -1.0 <= low <= high <= 1.0 and low > 0
    result = mcnemar([True] * 5 + [False] * 5, [True] * 5 + [False] * 5)  # identical runs
    assert result.delta == 0.0 and result.p_value == 1.0 and result.ci_low < 0 < result.ci_high


def test_bootstrap_of_identical_and_of_shifted_runs():
    values = [0.1 * index for index in range(30)]
    same = paired_bootstrap([values], [values], lambda items: sum(items) / len(items), resamples=200)
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_bootstrap(
        [[value + 2.0 for value in values]], [values], lambda items: sum(items) / len(items), resamples=200
    )
    # every resample has the same difference, 2: a zero-width interval and the smallest p a bootstrap can give
    assert shifted.delta == pytest.approx(2.0)
    assert shifted.ci_low == pytest.approx(2.0) and shifted.ci_high == pytest.approx(2.0)
    assert shifted.p_value == pytest.approx(1 / 201) and shifted.excludes_zero


def test_bootstrap_of_a_mean_matches_scipy_paired_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    generator = np.random.default_rng(3)
    base = generator.normal(0.0, 1.0, 400)
    adapter = base + generator.normal(0.15, 0.5, 400)
    mean = AdditiveMetric(statistics=lambda items: [[value, 1.0] for value in items], score=lambda s: s[0] / s[1])
    ours = paired_bootstrap([list(adapter)], [list(base)], mean, resamples=4000, seed=1)
    theirs = stats.bootstrap(
        (adapter, base),
        lambda a, b: np.mean(a) - np.mean(b),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=2,
    ).confidence_interval
    assert ours.delta == pytest.approx(float(np.mean(adapter - base)))
    # two independent sets of 4,000 resamples: the percentile limits agree to Monte-Carlo error (sd ≈ 0.0015 here)
    assert ours.ci_low == pytest.approx(theirs.low, abs=0.006) and ours.ci_high == pytest.approx(theirs.high, abs=0.006)
    assert ours.p_value < 0.01  # the interval is far from 0
    generic = paired_bootstrap(
        [list(adapter)], [list(base)], lambda items: sum(items) / len(items), resamples=500, seed=1
    )
    additive = paired_bootstrap([list(adapter)], [list(base)], mean, resamples=500, seed=1)
    assert (generic.ci_low, generic.ci_high, generic.p_value) == pytest.approx(
        (additive.ci_low, additive.ci_high, additive.p_value)
    )


def _flores_utils():
    import importlib.util

    from afp_cli.evaluation.tasks import default_include_path

    spec = importlib.util.spec_from_file_location(
        "afp_flores_utils", default_include_path() / "afp_flores" / "utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SENTENCES = [
    ("the cat sat on the mat", "the cat sat on a mat"),
    ("a dog ran in the park", "the dog ran to the park"),
    ("it is raining again today", "it rains again today"),
    ("I like green tea", "I love green tea very much"),
]


def test_bleu_and_chrf_statistics_give_corpus_scores_of_any_resample():
    """The summed sentence statistics are corpus_bleu / corpus_chrf of the resampled lists, to the digit."""
    import sacrebleu

    utils = _flores_utils()
    items_bleu = [(hypothesis, reference, "13a") for hypothesis, reference in SENTENCES]
    items_chrf = list(SENTENCES)
    for indices in ([0, 1, 2, 3], [0, 0, 2], [3, 1, 1, 1]):
        hypotheses = [SENTENCES[i][0] for i in indices]
        references = [SENTENCES[i][1] for i in indices]
        bleu = AdditiveMetric(utils.bleu_target_tok.item_statistics, utils.bleu_target_tok.score_statistics)
        chrf = AdditiveMetric(utils.chrfpp.item_statistics, utils.chrfpp.score_statistics)
        assert bleu([items_bleu[i] for i in indices]) == pytest.approx(
            sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a").score, abs=1e-9
        )
        assert chrf([items_chrf[i] for i in indices]) == pytest.approx(
            sacrebleu.corpus_chrf(hypotheses, [references], word_order=2).score, abs=1e-9
        )
        assert utils.bleu_target_tok([items_bleu[i] for i in indices]) == pytest.approx(
            bleu([items_bleu[i] for i in indices])
        )


def test_bootstrap_recomputes_corpus_bleu_on_each_resample():
    """Three sentences have ten distinct resamples: the interval's limits are corpus-BLEU deltas of two of them,
    not means of sentence BLEU."""
    import itertools

    import sacrebleu

    utils = _flores_utils()
    references = ["the cat sat on the mat today", "a dog ran quickly in the park", "it is raining again in town"]
    adapter = ["the cat sat on the mat now", "a dog ran quickly in a park", "it is raining in town"]
    base = ["a cat is on the mat", "the dog walks in the park", "rain again in the town"]
    adapter_items = [(h, r, "13a") for h, r in zip(adapter, references)]
    base_items = [(h, r, "13a") for h, r in zip(base, references)]

    def corpus_delta(indices):
        return (
            sacrebleu.corpus_bleu([adapter[i] for i in indices], [[references[i] for i in indices]]).score
            - sacrebleu.corpus_bleu([base[i] for i in indices], [[references[i] for i in indices]]).score
        )

    possible = {round(corpus_delta(indices), 9) for indices in itertools.combinations_with_replacement(range(3), 3)}
    result = paired_bootstrap([adapter_items], [base_items], utils.bleu_target_tok, resamples=300, seed=0)
    assert result.delta == pytest.approx(corpus_delta([0, 1, 2]))
    assert round(result.ci_low, 9) in possible and round(result.ci_high, 9) in possible
    again = paired_bootstrap([adapter_items], [base_items], utils.bleu_target_tok, resamples=300, seed=0)
    assert (again.ci_low, again.ci_high, again.p_value) == (result.ci_low, result.ci_high, result.p_value)


def test_bootstrap_over_seeds_averages_the_seeds_and_keeps_documents_together():
    mean = lambda items: sum(items) / len(items)  # noqa: E731
    first = [[1, 1, 0, 0], [1, 0, 1, 0]]
    second = [[0, 0, 0, 0], [1, 0, 1, 0]]
    result = paired_bootstrap(first, second, mean, resamples=100)
    assert result.delta == pytest.approx((0.5 + 0.0) / 2) and result.details["runs"] == 2
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([[1, 0]], [[1, 0, 1]], mean)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 2 · 0.8 capped at 1, then the running maximum
    assert holm([]) == []


# ------------------------------------------------------------------------------------------ comparison rows


def _items(values: list, task: str = "t", shots: int = 0, metric: str = "acc", hashes: list | None = None) -> dict:
    hashes = hashes or [f"h{index}" for index in range(len(values))]
    return {(task, shots, metric): {(task, index): (hashes[index], value) for index, value in enumerate(values)}}


def _row(model: str, value: float, delta: float | None, seeds: str = "0", **extra) -> dict:
    return {
        "task": "t",
        "shots": 0,
        "metric": "acc",
        "model": model,
        "value": value,
        "seeds": seeds,
        "delta_vs_base": delta,
        **extra,
    }


def test_comparison_rows_get_mcnemar_for_accuracy_and_holm_over_adapters():
    from afp_cli.evaluation.comparison import delta_cell
    from afp_cli.evaluation.significance import PairedTests

    base = [0] * 20 + [1] * 10
    good = [1] * 12 + [0] * 8 + [1] * 10  # 12 more right, none lost: p = 2 / 2^12
    same = list(base)
    items = {("base", 0): _items(base), ("good", 0): _items(good), ("same", 0): _items(same)}
    rows = [_row("base", 10 / 30, None), _row("good", 22 / 30, 12 / 30), _row("same", 10 / 30, 0.0)]
    PairedTests(items, {}, {}).annotate(rows)
    assert rows[0]["p_value"] is None and rows[0]["test"] is None
    assert rows[1]["test"] == "mcnemar-exact" and rows[1]["p_value"] == pytest.approx(2 / 4096)
    assert rows[1]["p_holm"] == pytest.approx(2 * 2 / 4096) and rows[2]["p_holm"] == 1.0
    assert rows[1]["ci_excludes_zero"] and not rows[2]["ci_excludes_zero"]
    assert rows[1]["paired"] == "30 documents"
    assert delta_cell(rows[1]).startswith("+0.4000 [+0.") and delta_cell(rows[1]).endswith("p<0.001 *")
    assert delta_cell(rows[2]).endswith("p=1")


def test_rows_on_different_documents_or_without_samples_are_not_tested():
    from afp_cli.evaluation.significance import PairedTests

    items = {("base", 0): _items([1, 0, 1]), ("a", 0): _items([1, 1, 1], hashes=["h0", "other", "h2"])}
    rows = [_row("base", 2 / 3, None), _row("a", 1.0, 1 / 3), _row("b", 1.0, 1 / 3)]
    PairedTests(items, {}, {}).annotate(rows)
    assert rows[1]["p_value"] is None and "documents differ" in rows[1]["paired"]
    assert rows[2]["p_value"] is None and "no per-document results" in rows[2]["paired"]


def test_corpus_metric_rows_get_the_bootstrap_and_several_seeds_a_pooled_interval():
    from afp_cli.evaluation.significance import PairedTests

    utils = _flores_utils()
    references = [reference for _, reference in SENTENCES]
    adapter = [(reference, reference, "13a") for reference in references]  # perfect translations
    base = [(hypothesis, reference, "13a") for hypothesis, reference in SENTENCES]
    items = {
        (model, seed): _items(values, metric="bleu_target_tok")
        for seed in (0, 1)
        for model, values in (("base", base), ("a", adapter))
    }
    aggregations = {"t": {"bleu_target_tok": utils.bleu_target_tok}}
    per_seed = [
        {**_row(model, 0.0, None, metric="bleu_target_tok"), "seed": seed} for seed in (0, 1) for model in ("base", "a")
    ]
    PairedTests(items, aggregations, {}, resamples=200).annotate(per_seed, per_seed=True)
    tested = [row for row in per_seed if row["model"] == "a"]
    assert all(row["test"] == "paired-bootstrap" and row["paired"] == "4 documents" for row in tested)
    # perfect translations beat the base on every resample by far more than half the observed delta: every
    # resampled delta lies within (0, 2δ), so the interval excludes 0 and p is the smallest possible, 1 / 201
    assert all(row["ci_low"] > 0 and row["p_value"] == pytest.approx(1 / 201) for row in tested)
    summary = [
        _row("base", 0.0, None, seeds="0,1", metric="bleu_target_tok"),
        _row("a", 100.0, 1.0, seeds="0,1", metric="bleu_target_tok"),
    ]
    PairedTests(items, aggregations, {}, resamples=200).annotate(summary)
    expected = 100.0 - utils.bleu_target_tok(base)
    assert summary[1]["paired"] == "4 documents × 2 seeds (mean)"
    assert summary[1]["delta_vs_base"] == 1.0  # the row's own delta is kept; the test brings the interval
    assert summary[1]["ci_low"] <= expected <= summary[1]["ci_high"] <= 100.0 and summary[1]["ci_low"] > 0
    off = [_row("base", 0.0, None, metric="bleu_target_tok"), _row("a", 100.0, 1.0, metric="bleu_target_tok")]
    PairedTests(items, aggregations, {}, resamples=0).annotate(off)
    assert off[1]["p_value"] is None and "--bootstrap 0" in off[1]["paired"]


def test_a_group_is_tested_on_its_pooled_documents_when_its_value_is_their_mean():
    from afp_cli.evaluation.significance import PairedTests, collect_items

    def results(values_by_task):
        samples = {
            task: [
                {"doc_id": index, "doc_hash": f"{task}{index}", "filter": "none", "metrics": ["acc"], "acc": value}
                for index, value in enumerate(values)
            ]
            for task, values in values_by_task.items()
        }
        return {"results": {"g": {}, "t1": {}, "t2": {}}, "group_subtasks": {"g": ["t1", "t2"]}, "samples": samples}

    base = collect_items(results({"t1": [0, 0, 0, 0], "t2": [1, 0]}), lambda task: 0)
    adapter = collect_items(results({"t1": [1, 1, 1, 1], "t2": [1, 1]}), lambda task: 0)
    assert len(base[("g", 0, "acc")]) == 6
    items = {("base", 0): base, ("a", 0): adapter}
    group_rows = [{**_row("base", 1 / 6, None), "task": "g"}, {**_row("a", 1.0, 5 / 6), "task": "g"}]
    values = {("g", 0, "acc", "base", 0): 1 / 6, ("g", 0, "acc", "a", 0): 1.0}
    PairedTests(items, {}, values).annotate(group_rows)
    assert group_rows[1]["test"] == "mcnemar-exact" and group_rows[1]["p_value"] == pytest.approx(2 / 32)
    unweighted = {("g", 0, "acc", "base", 0): (0 + 0.5) / 2, ("g", 0, "acc", "a", 0): 1.0}
    group_rows = [{**_row("base", 0.25, None), "task": "g"}, {**_row("a", 1.0, 0.75), "task": "g"}]
    PairedTests(items, {}, unweighted).annotate(group_rows)
    assert group_rows[1]["p_value"] is None and "not the mean of its documents" in group_rows[1]["paired"]
