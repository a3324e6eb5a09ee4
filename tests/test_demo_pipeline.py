"""The README's "align → evaluate → analyze on the demo", end to end with the shipped recipe and data (shortened)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_align_evaluate_analyze_on_the_demo(tmp_path, run_cli):
    run, base = tmp_path / "tiny-demo", tmp_path / "tiny-demo" / "base_model"
    demo_eval = ROOT / "afp_cli" / "demo" / "eval"
    code, out, err = run_cli(
        "align",
        ROOT / "recipes" / "tiny-demo.yaml",
        "-o",
        run,
        "train.max_steps=40",
        "train.eval_every=0",
        "train.save_every=0",
    )
    assert code == 0, err
    assert "held-out retrieval accuracy (sent0→sent1)" in out and (run / "adapter_model.safetensors").is_file()

    code, out, err = run_cli(
        "evaluate",
        "-m",
        base,
        "-a",
        run,
        "--tasks",
        "afp_flores_eng_Latn-zho_Hans",
        "--data-dir",
        demo_eval,
        "--limit",
        "2",
        "-o",
        tmp_path / "eval",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "eval" / "comparison.json").read_text())["rows"]
    assert {(row["model"], row["metric"]) for row in rows} >= {("base", "chrfpp"), ("tiny-demo", "chrfpp")}
    assert "warning" not in err  # the demo's 1,024 positions fit the task: no capped generation

    code, out, err = run_cli(
        "analyze", "language-rate", "-m", base, "-a", run, "--shots", "0", "--limit", "2", "-o", tmp_path / "rate"
    )
    assert code == 0, err
    assert (tmp_path / "rate" / "language_rate.md").is_file() and "tiny-demo en-zh 0-shot" in out

    code, out, err = run_cli(
        "analyze",
        "alignment",
        "-m",
        base,
        "-a",
        run,
        "--pairs",
        demo_eval / "pairs_en-zh.tsv",
        "--max-pairs",
        "40",
        "-o",
        tmp_path / "alignment",
    )
    assert code == 0, err
    assert (tmp_path / "alignment" / "alignment.md").is_file()
