"""bench/method_fidelity.py: the controlled experiment's data split, its verdicts, and (slow) the --quick run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from fidelity_data import PartSizes, split_parts  # noqa: E402
from fidelity_report import compare, summarise  # noqa: E402


def test_parts_are_disjoint_in_both_languages():
    pairs = [(f"en {i % 50}", f"zh {i}") for i in range(200)]  # English repeats: only 50 distinct pairs survive
    parts = split_parts(pairs, PartSizes(pretrain_en=10, pretrain_zh=10, align=10, dev=5, held_out=15))
    groups = [parts.pretrain_en, parts.pretrain_zh, parts.align, parts.dev, parts.held_out]
    assert [len(group) for group in groups] == [10, 10, 10, 5, 15]
    english = [en for group in groups for en, _ in group]
    chinese = [zh for group in groups for _, zh in group]
    assert len(set(english)) == len(english) == 50
    assert len(set(chinese)) == len(chinese) == 50
    # the pre-training text holds one side of each part only: no sentence of it has its translation in it
    texts = set(parts.pretraining_texts())
    assert not any(en in texts and zh in texts for en, zh in pairs)
    assert split_parts(pairs, PartSizes(10, 10, 10, 5, 15)) == parts  # the split never depends on anything else


def test_split_refuses_more_than_the_file_holds():
    with pytest.raises(SystemExit, match="need 60 distinct pairs, the file has 50"):
        split_parts([(f"e{i}", f"z{i}") for i in range(50)], PartSizes(20, 20, 10, 5, 5))


def _rows(variant: str, values: list[float]) -> list[dict]:
    metrics = {
        "retrieval_layer1_en_zh": 0.0,
        "retrieval_layer1_zh_en": 0.0,
        "retrieval_last_en_zh": 0.0,
        "retrieval_last_zh_en": 0.0,
        "chrf": 0.0,
        "bleu": 0.0,
        "language_rate": 0.0,
        "held_out_cit_loss": 0.0,
    }
    return [{"variant": variant, "seed": seed, **metrics, "retrieval_top1": value} for seed, value in enumerate(values)]


def test_a_difference_within_the_spread_is_noise():
    summary = summarise(
        _rows("mcl", [0.30, 0.20, 0.25]) + _rows("base", [0.01, 0.02, 0.03]) + _rows("cit", [0.22, 0.40, 0.04]), "main"
    )
    clear = compare(summary, "mcl", "base", "retrieval_top1")
    assert clear["difference"] == pytest.approx(0.23)
    assert clear["spread"] == pytest.approx(0.05)  # the bigger of the two sample standard deviations
    assert clear["verdict"] == "yes"
    assert compare(summary, "mcl", "cit", "retrieval_top1")["verdict"] == "noise"  # 0.27 ± 0.18 vs 0.25 ± 0.05
    assert compare(summary, "base", "mcl", "retrieval_top1")["verdict"] == "no (reversed)"


def test_a_loss_is_better_when_lower():
    summary = summarise(_rows("cit", [0.0]) + _rows("base", [0.0]), "main")
    summary[0]["held_out_cit_loss"] = {"mean": 4.0, "spread": 0.1, "values": [4.0]}
    summary[1]["held_out_cit_loss"] = {"mean": 6.0, "spread": 0.1, "values": [6.0]}
    assert compare(summary, "cit", "base", "held_out_cit_loss")["verdict"] == "yes"


@pytest.mark.slow
def test_quick_run_separates_mcl_from_no_mcl(tmp_path):
    """The effects that must hold at any scale: MCL aligns sentence vectors, CIT learns to translate."""
    out = tmp_path / "fidelity"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "method_fidelity.py"),
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        check=True,
        timeout=1200,
    )
    result = json.loads((out / "results.json").read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"base", "mcl", "cit", "mcl+cit"}
    base = rows["base"]["retrieval_top1"]  # chance is 1/200; shared digits and names put base a little above it
    assert rows["mcl"]["retrieval_top1"] >= max(3 * base, base + 0.05)
    # In 200 steps CIT's gradient (weight 1.5) slows MCL's down (its loss falls half as far as alone): MCL + CIT
    # aligns less than MCL alone, but still clearly more than base and than CIT (measured 0.028 vs 0.018 and 0.010).
    assert rows["mcl+cit"]["retrieval_top1"] >= 1.5 * base
    assert rows["mcl+cit"]["retrieval_top1"] >= 2 * rows["cit"]["retrieval_top1"]
    assert rows["cit"]["held_out_cit_loss"] < rows["base"]["held_out_cit_loss"] - 0.5
    assert rows["mcl+cit"]["held_out_cit_loss"] < rows["base"]["held_out_cit_loss"] - 0.5
    assert any(command.startswith("afp align ") for command in result["commands"])
    assert (out / "results.md").is_file() and (out / "results.png").stat().st_size > 1000
