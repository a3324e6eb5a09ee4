"""`afp analyze` end to end on a tiny random model with an adapter: reports, figures and one-line user errors."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir, tmp_path_factory):
    """A tiny LLaMA and a LoRA adapter on it whose weights are perturbed, so it changes the hidden states."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_dir("llama")
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    adapter_dir = tmp_path_factory.mktemp("adapter") / "afp-adapter"
    adapted.save_pretrained(adapter_dir)
    return model_dir, adapter_dir


def test_alignment_end_to_end_on_tatoeba(run_cli, tiny_llama, shared_data, tmp_path):
    model_dir, adapter_dir = tiny_llama
    output = tmp_path / "alignment"
    args = ["analyze", "alignment", "--model", model_dir, "--adapter", adapter_dir, "--pairs",
            shared_data / "parallel" / "tatoeba_en-zh.tsv", "--max-pairs", 200, "--batch-size", 50, "-o", output]
    code, out, err = run_cli(*args)
    assert code == 0, err
    rows = json.loads((output / "alignment.json").read_text())["rows"]
    assert [(row["model"], row["layer"]) for row in rows] == [
        (model, layer) for model in ("base", "afp-adapter") for layer in range(5)
    ]
    by_key = {(row["model"], row["layer"]): row for row in rows}
    # LoRA on attention leaves the embeddings alone and changes every block's output.
    assert by_key[("base", 0)] == {**by_key[("afp-adapter", 0)], "model": "base"}
    assert by_key[("base", 2)]["pair_cosine"] != pytest.approx(by_key[("afp-adapter", 2)]["pair_cosine"])
    for row in rows:
        assert -1 <= row["pair_cosine"] <= 1 and 0 <= row["retrieval_x_to_y"] <= 1 and row["uniformity"] <= 0
    markdown = (output / "alignment.md").read_text()
    assert markdown.count("| base |") == 5 and markdown.count("| afp-adapter |") == 5
    for figure in ("alignment_layers.png", "alignment_map.png"):
        assert (output / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (output / figure).stat().st_size > 5000

    code, _, err = run_cli(*args)
    assert code == 2 and err.strip().count("\n") == 0 and "--overwrite" in err

    # The base rows are the base model's own: the adapters were switched off for it, not merely loaded after it.
    base_only = tmp_path / "base-only"
    code, _, err = run_cli(*args[:4], *args[6:-1], base_only)
    assert code == 0, err
    alone = json.loads((base_only / "alignment.json").read_text())["rows"]
    for single, beside in zip(alone, [row for row in rows if row["model"] == "base"], strict=True):
        numbers = {key: value for key, value in beside.items() if key != "model"}
        assert {key: single[key] for key in numbers} == pytest.approx(numbers, rel=1e-5, abs=1e-6), single["layer"]


def test_language_rate_generates_for_base_and_adapter(run_cli, tiny_llama, tmp_path):
    model_dir, adapter_dir = tiny_llama
    output = tmp_path / "rate"
    code, out, err = run_cli("analyze", "language-rate", "--model", model_dir, "--adapter",
                             adapter_dir, "--limit", 3, "--max-new-tokens", 6, "--batch-size", 6, "-o", output)
    assert code == 0, err
    rows = json.loads((output / "language_rate.json").read_text())["rows"]
    assert [(row["model"], row["direction"], row["shots"]) for row in rows] == [
        (model, direction, shots)
        for model in ("base", "afp-adapter") for direction in ("en-zh", "zh-en") for shots in (0, 1)
    ]
    for row in rows:
        assert row["answers"] == 3 and sum(row["counts"].values()) == 3
        assert row["rate"] == row["counts"]["target"] / 3
    assert (output / "language_rate_bars.png").stat().st_size > 5000
    # The saved answers are a generations file: scoring them again gives the same rows.
    generations = output / "language_rate_generations.jsonl"
    assert len(generations.read_text().splitlines()) == 24
    rescored = tmp_path / "rescored"
    code, _, err = run_cli("analyze", "language-rate", "--generations", generations, "-o", rescored)
    assert code == 0, err
    again = json.loads((rescored / "language_rate.json").read_text())["rows"]
    assert [(row["model"], row["direction"], row["shots"], row["counts"]) for row in again] == [
        (row["model"], row["direction"], row["shots"], row["counts"]) for row in rows
    ]


def _adapter_of_another_base(adapter_dir, tmp_path):
    import shutil

    other = tmp_path / "other-adapter"
    shutil.copytree(adapter_dir, other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "facebook/xglm-564M"
    (other / "adapter_config.json").write_text(json.dumps(config))
    return other


def test_bad_input_is_one_line_and_exit_2(run_cli, tiny_llama, tmp_path):
    model_dir, adapter_dir = tiny_llama
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("en\tzh\nHello.\t你好。\nGood night.\t晚安。\none field only\n", encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "1", "lang": "en", "question": "Why?"}\n{"id": 2, "question": "How?"}\n')
    cases = [
        (["analyze", "language-rate", "--model", model_dir, "--directions", "en-qq"], "unknown language code 'qq'"),
        (["analyze", "language-rate", "--model", model_dir, "--questions", questions], "questions.jsonl:2: field 'lang': missing"),
        (["analyze", "language-rate", "--model", model_dir, "--directions", "en-km"], "'km' is not supported"),
        (["analyze", "alignment", "--model", model_dir, "--pairs", pairs], "pairs.tsv:4: field 'columns': expected 2 tab-separated columns"),
        (["analyze", "alignment", "--model", model_dir, "--pairs", pairs, "--max-pairs", 2, "--layers", "0,9"],
         "layer 9 is beyond the model (layers 0..4"),
        (["analyze", "alignment", "--model", model_dir, "--pairs", pairs, "--max-pairs", 2,
          "--adapter", _adapter_of_another_base(adapter_dir, tmp_path)], "trained on base model 'facebook/xglm-564M'"),
        (["analyze", "language-rate", "--generations", pairs, "--target-lang", "zh"], "pairs.tsv:1: not valid JSON"),
        (["analyze", "language-rate"], "give either --model"),
    ]
    for args, message in cases:
        code, _, err = run_cli(*args, "-o", tmp_path / "out")
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.strip().count("\n") == 0, err
        assert message in err, (message, err)
    assert not (tmp_path / "out").exists()  # nothing half-written
