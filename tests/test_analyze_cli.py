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
    adapted = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
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
    args = [
        "analyze",
        "alignment",
        "--model",
        model_dir,
        "--adapter",
        adapter_dir,
        "--pairs",
        shared_data / "parallel" / "tatoeba_en-zh.tsv",
        "--max-pairs",
        200,
        "--batch-size",
        50,
        "-o",
        output,
    ]
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


@pytest.mark.slow  # ~10-15 s: base + adapter × 2 directions × 2 shot counts, then two re-scorings
def test_language_rate_on_hc3_files_through_lm_eval_for_base_and_adapter(run_cli, tiny_llama, tmp_path):
    from helpers import hc3_chinese, hc3_english, write_jsonl

    model_dir, adapter_dir = tiny_llama
    english, chinese = hc3_english(tmp_path / "all.jsonl", 6), hc3_chinese(tmp_path / "all_zh.jsonl", 5)
    demonstrations = write_jsonl(
        tmp_path / "demos.jsonl",
        [
            {"question": f"Question {index}?", "answer": f"回答{index}。", "question_lang": "en", "answer_lang": "zh"}
            for index in range(4)
        ]
        + [
            {"question": f"问题{index}？", "answer": f"Answer {index}.", "question_lang": "zh", "answer_lang": "en"}
            for index in range(4)
        ],
    )
    output = tmp_path / "rate"
    code, out, err = run_cli(
        "analyze",
        "language-rate",
        "-m",
        model_dir,
        "-a",
        adapter_dir,
        "--questions",
        f"en={english}",
        "--questions",
        f"zh={chinese}",
        "--demonstrations",
        demonstrations,
        "--sample",
        4,
        "--seed",
        3,
        "--batch-size",
        8,
        "-o",
        output,
    )
    assert code == 0, err
    report = json.loads((output / "language_rate.json").read_text())
    rows = report["rows"]
    assert [(row["model"], row["direction"], row["shots"]) for row in rows] == [
        (model, direction, shots)
        for model in ("base", "afp-adapter")
        for direction in ("en-zh", "zh-en")
        for shots in (0, 1)
    ]
    for row in rows:
        assert row["answers"] == 4 and sum(row["counts"].values()) == 4
        assert row["rate"] == row["counts"]["target"] / 4
        assert (row["delta_vs_base"] is None) == (row["model"] == "base")
    assert [item["model"] for item in report["averages"]] == ["base", "afp-adapter"]
    assert all(item["paper_cells"] for item in report["averages"])
    assert [(item["asked"], item["available"]) for item in report["inputs"]] == [(4, 6), (4, 5)]

    # One fixed demonstration (the seeded draw) before every question, the same for base and adapter.
    from afp_cli.analyze.questions import fixed_demonstrations, read_demonstrations

    (expected,) = [
        item
        for item in fixed_demonstrations(
            [d for d in read_demonstrations(demonstrations) if d.question_lang == "en"], 1, seed=3
        )
    ]
    for model in ("base", "afp-adapter"):
        samples = output / "language_rate_run" / "raw" / model / "1shot" / "samples_afp_langrate_en-zh.jsonl"
        prompts = [json.loads(line)["arguments"][0][0] for line in samples.read_text().splitlines()]
        assert len(prompts) == 4
        assert {prompt.split("\n")[0] for prompt in prompts} == {
            f"{expected.question} Answer in Chinese: {expected.answer}"
        }
        assert all(prompt.count("\n") == 1 and prompt.endswith(" Answer in Chinese:") for prompt in prompts)
    markdown = (output / "language_rate.md").read_text()
    assert "## Comparing with the paper (Table 4)" in markdown and "31.1 % (base) → 76.0 % (AFP)" in markdown
    assert f"`en={english}`" in markdown and "4 questions asked of 6 in `en` (a seeded sample of 4, seed 3)" in markdown
    assert (output / "language_rate_bars.png").stat().st_size > 5000

    # The saved answers and the lm-eval samples both re-score to the same rows (the same cut applies).
    for name, inputs in (
        ("saved", [output / "language_rate_generations.jsonl"]),
        ("samples", sorted((output / "language_rate_run" / "raw").glob("*/*/samples_*.jsonl"))),
    ):
        arguments = [argument for path in inputs for argument in ("--generations", path)]
        code, _, err = run_cli("analyze", "language-rate", *arguments, "-o", tmp_path / name)
        assert code == 0, err
        again = json.loads((tmp_path / name / "language_rate.json").read_text())["rows"]
        key = lambda row: (row["model"], row["direction"], row["shots"])  # noqa: E731
        assert sorted((key(row), row["counts"], row["cut"]) for row in again) == sorted(
            (key(row), row["counts"], row["cut"]) for row in rows
        ), name

    code, _, err = run_cli("analyze", "language-rate", "-m", model_dir, "-o", output)
    assert code == 2 and "--overwrite" in err and err.strip().count("\n") == 0


def test_bad_input_is_one_line_and_exit_2(run_cli, tiny_llama, tmp_path):
    model_dir, _ = tiny_llama
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("en\tzh\nHello.\t你好。\nGood night.\t晚安。\none field only\n", encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "1", "lang": "en", "question": "Why?"}\n{"id": 2, "question": "How?"}\n')
    hc3 = tmp_path / "hc3.jsonl"  # HC3 schema, cut off in the middle of its second line
    hc3.write_text(
        '{"question": "Why?", "human_answers": [], "chatgpt_answers": []}\n{"question": "How', encoding="utf-8"
    )
    cases = [
        (["analyze", "language-rate", "--model", model_dir, "--directions", "en-qq"], "unknown language code 'qq'"),
        (
            ["analyze", "language-rate", "--model", model_dir, "--questions", questions],
            "questions.jsonl:2: field 'lang': missing",
        ),
        (["analyze", "language-rate", "--model", model_dir, "--directions", "en-km"], "'km' is not supported"),
        (
            ["analyze", "alignment", "--model", model_dir, "--pairs", pairs],
            "pairs.tsv:4: field 'columns': expected 2 tab-separated columns",
        ),
        (
            ["analyze", "alignment", "--model", model_dir, "--pairs", pairs, "--max-pairs", 2, "--layers", "0,9"],
            "layer 9 is beyond the model (layers 0..4",
        ),
        (["analyze", "language-rate", "--generations", pairs, "--target-lang", "zh"], "pairs.tsv:1: not valid JSON"),
        (["analyze", "language-rate"], "give either --model"),
        (
            [
                "analyze",
                "language-rate",
                "--generations",
                pairs,
                "--stop",
                "none",
                "--stop",
                "x",
                "--target-lang",
                "zh",
            ],
            "--stop none keeps whole answers",
        ),
        (
            ["analyze", "language-rate", "--model", model_dir, "--questions", f"en={hc3}", "--shots", "0"],
            "hc3.jsonl:2: not valid JSON",
        ),
    ]
    # Files that are not UTF-8, given as questions, demonstrations, generations or pairs.
    encodings = {
        "latin1": ("en\tfr\nCafé crème.\tCafé crème.\n".encode("latin-1"), ":2: not UTF-8 text (byte 0xe9; Latin-1"),
        "utf16": ('{"text": "你好"}\n'.encode("utf-16"), ":1: not UTF-8 text (byte 0xff; it looks like UTF-16)"),
        "binary": (b"PK\x03\x04\x00\x00binary", ":1: not UTF-8 text (byte 0x00; it looks binary or UTF-16)"),
    }
    for name, (content, message) in encodings.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_bytes(content)
        cases += [
            (
                ["analyze", "language-rate", "--model", model_dir, "--questions", f"en={bad}"],
                f"{bad}{message.format(what='questions')}",
            ),
            (
                ["analyze", "language-rate", "--model", model_dir, "--demonstrations", bad],
                f"{bad}{message.format(what='demonstrations')}",
            ),
            (
                ["analyze", "language-rate", "--generations", bad, "--target-lang", "zh"],
                f"{bad}{message.format(what='generations')}",
            ),
            (
                ["analyze", "alignment", "--model", model_dir, "--pairs", bad, "--languages", "en,fr"],
                f"{bad}{message.format(what='pairs')}",
            ),
        ]
    for args, message in cases:
        code, _, err = run_cli(*args, "-o", tmp_path / "out")
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.strip().count("\n") == 0, err
        assert message in err, (message, err)
    assert not (tmp_path / "out").exists()  # nothing half-written
