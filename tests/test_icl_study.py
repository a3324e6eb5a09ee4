"""bench/icl_study.py: the screening rule, the demonstrations' language, the pooled paired tests and verdicts, and
(slow) `bench/real_model.py run --study icl --scale smoke-icl` end to end on a tiny random model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import icl_study as icl  # noqa: E402


@pytest.mark.parametrize(
    ("correct", "items", "low", "high"),
    [  # scipy.stats.beta.ppf(0.025, k, n-k+1) and beta.ppf(0.975, k+1, n-k), rounded
        (52, 100, 0.41779, 0.62099),
        (70, 100, 0.60019, 0.78759),
        (40, 100, 0.30329, 0.50279),
        (0, 10, 0.0, 0.3085),
        (10, 10, 0.6915, 1.0),
    ],
)
def test_clopper_pearson_gives_the_exact_binomial_interval(correct, items, low, high):
    found = icl.clopper_pearson(correct, items)
    assert found == pytest.approx((low, high), abs=1e-5)


def test_the_screening_rule_on_hand_numbers():
    cell = lambda task, shots, correct, choices=2: icl.ScreenCell(task, shots, correct, 100, choices)  # noqa: E731
    assert cell("t", 0, 52).at_chance  # 52/100 on two choices: [0.418, 0.621] holds 0.5
    assert not cell("t", 0, 70).at_chance  # [0.600, 0.788]
    assert cell("t", 0, 30).at_chance and cell("t", 0, 30).below_chance  # [0.212, 0.400]: a bias, not skill
    assert not cell("t", 0, 70).below_chance and not cell("t", 0, 52).below_chance
    assert cell("t", 0, 40, choices=3).at_chance  # [0.303, 0.503] holds 1/3
    assert not cell("t", 0, 45, choices=3).at_chance  # [0.350, 0.553]
    screening = icl.Screening(
        {
            "both_at_chance": [cell("both_at_chance", 0, 52), cell("both_at_chance", 5, 55)],
            "above_at_five": [cell("above_at_five", 0, 52), cell("above_at_five", 5, 70)],
            "kept": [cell("kept", 0, 50), cell("kept", 5, 50)],
        },
        frozenset({"kept"}),
    )
    assert screening.measured == ["above_at_five", "kept"]  # above chance at one shot count is enough
    assert screening.skipped == ["both_at_chance"]
    listed = icl.screening_json(screening)
    assert listed["at_chance"] == ["both_at_chance"] and listed["kept_by_request"] == ["kept"]


def _write_samples(folder: Path, task: str, correct: list[int], choices: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"doc_id": doc, "acc": float(value), "arguments": [["ctx", f" {c}"] for c in range(choices)]})
        for doc, value in enumerate(correct)
    ]
    (folder / f"samples_{task}.jsonl").write_text("\n".join(lines) + "\n")


def test_read_screening_counts_the_base_models_documents_in_the_given_order(tmp_path):
    for shots, xnli in ((0, [1] * 9 + [0]), (5, [0] * 10)):
        _write_samples(tmp_path / "raw" / "base" / f"{shots}shot", "afp_xnli_zh_demo_en", xnli, 3)
        _write_samples(tmp_path / "raw" / "base" / f"{shots}shot", "afp_pawsx_zh_demo_en", [1, 0] * 5, 2)
    screening = icl.read_screening(tmp_path, ["afp_xnli_zh_demo_en", "afp_pawsx_zh_demo_en"], [0, 5])
    assert list(screening.cells) == ["afp_xnli_zh_demo_en", "afp_pawsx_zh_demo_en"]
    first = screening.cells["afp_xnli_zh_demo_en"][0]
    assert (first.correct, first.items, first.choices) == (9, 10, 3)  # 9/10: [0.555, 0.997] above 1/3
    assert screening.measured == ["afp_xnli_zh_demo_en"] and screening.skipped == ["afp_pawsx_zh_demo_en"]
    with pytest.raises(SystemExit, match="afp_xcopa_zh"):
        icl.read_screening(tmp_path, ["afp_xcopa_zh_demo_native"], [0, 5])


def test_english_demonstrations_where_their_file_is_there_else_native(shared_data, tmp_path):
    choices = icl.task_choices(shared_data)
    assert choices["afp_xnli_zh_demo_en"].demo_lang == "en"
    assert choices["afp_xstorycloze_ar_demo_en"].demo_lang == "en"  # ar has no train split: English ones
    assert choices["afp_xcopa_it_demo_native"].demo_lang == "native"  # COPA's English train is not shared
    assert "not in the data folder" in choices["afp_xcopa_it_demo_native"].note
    assert {choice.task.group for choice in choices.values()} == {"en", "zh", "unseen"}
    assert len(choices) == len(icl.CATALOGUE)
    assert icl.task_choices(tmp_path) == {}  # no test file: nothing to run
    with pytest.raises(SystemExit, match="afp_xnli_xx"):
        icl.task_choices(shared_data, ["afp_xnli_xx"])


def _runs(adapter_right: list[list[int]], base_right: list[list[int]], task: str = "t") -> list[dict]:
    return [
        {
            "adapter": {0: {task: dict(enumerate(adapter))}},
            "base": {0: {task: dict(enumerate(base))}},
        }
        for adapter, base in zip(adapter_right, base_right)
    ]


def test_pooled_delta_pairs_documents_across_seeds():
    better = icl.pooled_delta(_runs([[1] * 30, [1] * 30], [[0] * 30, [1] * 15 + [0] * 15]), "adapter", "base", ["t"], 0)
    assert better.delta == pytest.approx(0.75)  # seed 0: +1.0, seed 1: +0.5
    assert better.p_value < 0.01 and better.ci_low > 0 and better.documents == 30 and better.seeds == 2
    same = icl.pooled_delta(_runs([[1, 0] * 10], [[1, 0] * 10]), "adapter", "base", ["t"], 0)
    assert same.delta == 0 and same.p_value == 1.0


def test_a_groups_number_is_the_mean_over_its_tasks():
    runs = [
        {
            "a": {0: {"small": {0: 1, 1: 1}, "large": {i: 0 for i in range(20)}}},
            "b": {0: {"small": {0: 0, 1: 0}, "large": {i: 0 for i in range(20)}}},
        }
    ]
    found = icl.pooled_delta(runs, "a", "b", ["small", "large"], 0, resamples=50)
    assert found.delta == pytest.approx(0.5)  # (1.0 + 0.0) / 2, not the 2/22 of the pooled items


def test_a_difference_is_shown_only_beyond_the_test_and_the_spread():
    gain = icl.Claim("cit", "base", "zh")
    assert icl.verdict(gain, 0.05, 0.01, 0.02) == "shown"
    assert icl.verdict(gain, 0.05, 0.01, 0.08) == "not shown"  # the seeds disagree more than that
    assert icl.verdict(gain, 0.05, 0.20, None) == "not shown"
    assert icl.verdict(gain, -0.05, 0.01, None) == "reversed"
    no_gain = icl.Claim("mcl", "base", "zh", "no-gain")
    assert icl.verdict(no_gain, 0.01, 0.6, 0.02) == "holds: no gain shown"
    assert icl.verdict(no_gain, 0.05, 0.01, 0.02) == "contradicted: it helps"
    assert icl.verdict(no_gain, -0.05, 0.01, 0.02) == "holds: it hurts"


@pytest.mark.slow
def test_the_smoke_study_screens_measures_and_reports(tmp_path, tiny_tokenizer, shared_data):
    """The whole ICL study on a random 4-layer model, 2 seeds: every task is at chance on 4 items except by luck,
    the kept one is measured on the adapters, the others are listed and skipped."""
    from afp_cli.model.tiny import build_model, tiny_architecture

    model = tmp_path / "tiny"
    build_model(tiny_architecture("llama", max_position_embeddings=2048), tiny_tokenizer).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    tasks = ["afp_xnli_zh", "afp_pawsx_en", "afp_xcopa_it", "afp_xstorycloze_ar", "afp_xwinograd_zh"]
    kept = "afp_pawsx_en_demo_en"
    out = tmp_path / "study"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "bench/real_model.py", "run", "--study", "icl", "--scale", "smoke-icl", "--model",
               str(model), "--out", str(out), "--threads", "1", "--seed", "0", "1", "--icl-tasks", *tasks,
               "--keep-tasks", kept, "--data-dir", str(shared_data), "--parallel",
               str(shared_data / "parallel" / "tatoeba_en-zh.tsv")]  # fmt: skip
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1500)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    screening = results["screening"]
    names = {cell["task"] for cell in screening["cells"]}
    assert names == {f"{task}_demo_native" if "xcopa" in task else f"{task}_demo_en" for task in tasks}
    for name in names:  # the rule, applied: measured unless at chance at every shot count (or kept)
        at_chance = all(cell["at_chance"] for cell in screening["cells"] if cell["task"] == name)
        assert (name in screening["measured"]) == (not at_chance or name == kept)
        assert (name in screening["at_chance"]) == (at_chance and name != kept)
    assert kept in screening["measured"] and screening["at_chance"]
    for seed in (0, 1):  # the adapters ran on the measured tasks only, at 0 and 5 shots
        for shots in (0, 5):
            ran = {path.stem.removeprefix("samples_") for path in (out / f"seed-{seed}" / "icl" / "raw").glob(
                f"*/{shots}shot/samples_*.jsonl")}  # fmt: skip
            assert ran == set(screening["measured"])
    variants = {row["variant"] for row in results["rows"]}
    assert {"base", "mcl", "cit", "mcl+cit"} <= variants and len(variants) == 5  # + MCL + CIT at the measured layer
    assert all(row["variant"] != "base" or row["seed"] in (0, 1) for row in results["rows"])
    assert all("icl_en_0shot" in row and "cls_rouge1" in row for row in results["rows"])
    groups = [row for row in results["icl"]["groups"] if row["group"] == "en" and row["variant"] != "base"]
    assert len(groups) == 8 and all(0 <= row["p_value"] <= 1 and len(row["values"]) == 2 for row in groups)
    assert {claim["verdict"] for claim in results["icl"]["claims"]} <= {
        "shown",
        "reversed",
        "not shown",
        "holds: no gain shown",
        "contradicted: it helps",
        "holds: it hurts",
        "no task above chance in this group",
    }
    assert {"screening", "icl", "summary", "rate", "alignment"} <= set(results["timings"])
    markdown = (out / "results.md").read_text()
    for heading in ("### Screening", "### The paper's claims on in-context learning", "### Appendix", "## Per seed"):
        assert heading in markdown
    assert "can show neither a gain nor a loss: " + screening["at_chance"][0] in markdown

    # run again: every phase is kept, and the report still lists every command behind it and the screening's time
    again = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    rerun = json.loads((out / "results.json").read_text())
    kept = [line.removesuffix("  # kept from an earlier invocation") for line in rerun["commands"]]
    assert all(line.endswith("# kept from an earlier invocation") for line in rerun["commands"])
    assert set(kept) == {line for line in results["commands"] if not line.startswith("afp data")}
    assert results["timings"]["screening"]["all"] > 0
    assert rerun["timings"]["screening"] == results["timings"]["screening"]
    assert rerun["rows"] == results["rows"]
