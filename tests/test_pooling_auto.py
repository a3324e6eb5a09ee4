"""`mcl.pooling: auto` in a run: measured once before the first step, resolved into recipe.yaml and summary.json,
kept by a resume; and the held-out pairs it measures on, oriented by language."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import GOOD_LINES, data_with, write_recipe
from rich.console import Console

import afp_cli.align.layer_choice as layer_choice
from afp_cli.align.config import load_config
from afp_cli.align.held_out import oriented
from afp_cli.align.train import align
from afp_cli.data.batches import TokenizedExample, collate
from afp_cli.data.training_records import TrainingExample, read_training_file
from afp_cli.model.pooling import Pooling

# mean of both directions: layer 0 and the last (4) score highest but are never chosen; 2 and 3 tie → 2
TABLE = {0: (0.9, 0.9), 1: (0.1, 0.2), 2: (0.5, 0.6), 3: (0.6, 0.5), 4: (0.99, 0.99)}


@pytest.fixture
def measured(monkeypatch):
    """The retrieval table auto sees, whatever the model, and the number of times it was measured."""
    calls = []

    def fake(model, batches, method, layers, device, autocast, through=None):
        calls.append((method, list(layers), sum(batch.sentence_ids.shape[0] // 2 for batch in batches)))
        return {layer: TABLE[layer] for layer in layers}

    monkeypatch.setattr(layer_choice, "retrieval_by_layer", fake)
    return calls


def run(tmp_path: Path, resume: bool = False, **sections):
    lines = GOOD_LINES + GOOD_LINES[:6]  # 18 examples: 4 held out (write_recipe's default), 14 to train on
    recipe = write_recipe(tmp_path, data_with(tmp_path, lines), **sections)
    console = Console(file=io.StringIO(), width=400)
    config = load_config(recipe)
    result = align(config, resume=resume, console=console, stop_after=None if resume else 2)
    return config, result, console.file.getvalue()


def test_auto_pools_the_best_middle_layer_and_the_run_records_it(tmp_path, measured):
    config, _, out = run(tmp_path, mcl={"pooling": "auto"}, train={"max_steps": 2})
    assert measured == [("last", [0, 1, 2, 3, 4], 4)]  # every layer of the 4-layer model, the 4 held-out pairs
    assert config.mcl.pooled == Pooling("last", 2)
    assert "pooling auto → last-2 (retrieval 0.55 at layer 2; 0.15 at layer 1; mean top-1 of sent0→sent1" in out
    assert "over 4 held-out pairs" in out
    folder = Path(config.output_dir)
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert (recipe["mcl"]["pooling"], recipe["mcl"]["pooling_resolved"]) == ("auto", "last-2")
    table = json.loads((folder / "summary.json").read_text())["pooling_auto"]
    assert (table["requested"], table["resolved"], table["measured_on"], table["pairs"]) == (
        "last-auto",
        "last-2",
        "held-out",
        4,
    )
    assert [row["layer"] for row in table["retrieval_by_layer"]] == [0, 1, 2, 3, 4]
    assert table["retrieval_by_layer"][2] == {"layer": 2, "sent0→sent1": 0.5, "sent1→sent0": 0.6, "mean": 0.55}


def test_a_resume_pools_where_the_run_started_and_never_measures_again(tmp_path, measured):
    config, result, _ = run(tmp_path, mcl={"pooling": "avg-auto"}, train={"max_steps": 4})
    assert result.stopped_early and len(measured) == 1
    config, result, out = run(tmp_path, resume=True, mcl={"pooling": "avg-auto"}, train={"max_steps": 4})
    assert len(measured) == 1 and result.steps == 4  # not measured again, and resume_check accepted the recipe
    assert config.mcl.pooled == Pooling("avg", 2)
    assert "pooling avg-auto → avg-2 (from the recipe: not measured again)" in out
    folder = Path(config.output_dir)
    assert yaml.safe_load((folder / "recipe.yaml").read_text())["mcl"]["pooling_resolved"] == "avg-2"
    assert json.loads((folder / "summary.json").read_text())["pooling_auto"]["resolved"] == "avg-2"


def test_without_held_out_pairs_auto_measures_a_slice_of_the_training_pairs_and_says_so(tmp_path, measured):
    _, _, out = run(tmp_path, mcl={"pooling": "auto"}, data={"held_out": 0}, train={"max_steps": 2})
    assert measured[0][2] == 18  # every training pair (fewer than the slice's 128)
    assert "over 18 training pairs (data.held_out is 0)" in out


def test_a_recipe_that_gives_the_layer_is_not_measured(tmp_path, measured):
    config, _, out = run(tmp_path, mcl={"pooling": "auto", "pooling_resolved": "last-3"}, train={"max_steps": 2})
    assert measured == [] and config.mcl.pooled == Pooling("last", 3)
    assert "pooling auto → last-3 (from the recipe: not measured again)" in out


def test_the_measured_table_is_what_held_out_retrieval_gives_at_each_layer(tiny_tokenizer):
    """retrieval_by_layer (one pass, every hidden state) against score_batches (one pass per layer, stopped there)."""
    from afp_cli.model.scoring import retrieval_by_layer, score_batches
    from afp_cli.model.tiny import build_model, tiny_architecture

    model = build_model(tiny_architecture("llama"), tiny_tokenizer, seed=0).eval()
    generator = torch.Generator().manual_seed(0)
    examples = [
        TokenizedExample([torch.randint(5, 300, (length,), generator=generator).tolist() for _ in range(2)])
        for length in (3, 5, 4, 6, 7, 3, 5, 8)
    ]
    batches = [collate(examples[:5], 0), collate(examples[5:], 0)]
    table = retrieval_by_layer(model, batches, "avg", range(5), "cpu", _null)
    for layer in range(5):
        scores = score_batches(model, batches, Pooling("avg", layer), "cpu", _null)
        assert table[layer] == (scores["retrieval_top1"], scores["retrieval_top1_reverse"])
    assert {value for pair in table.values() for value in pair} != {1.0}  # a random model does not retrieve all


def _null():
    import contextlib

    return contextlib.nullcontext()


def _example(languages):
    return TrainingExample(1, "a", "b", None, None, 0, languages)


def test_held_out_pairs_are_put_in_one_language_order():
    tokenized = [TokenizedExample([[1], [2]]), TokenizedExample([[3], [4], [9]]), TokenizedExample([[5], [6]])]
    held_out = oriented(tokenized, [_example(("en", "zh")), _example(("zh", "en")), _example(("en", "zh"))])
    assert [item.sentences for item in held_out.examples] == [[[1], [2]], [[4], [3], [9]], [[5], [6]]]
    assert held_out.languages == ("en", "zh") and held_out.directions == ("en→zh", "zh→en")
    # a pivot language comes first whatever its code: de and zh each pair with en
    pivot = oriented(tokenized, [_example(("de", "en")), _example(("zh", "en")), _example(("en", "zh"))])
    assert [item.sentences[0] for item in pivot.examples] == [[2], [4], [5]]
    assert pivot.languages is None and pivot.directions == ("sent0→sent1", "sent1→sent0")
    # a file that names no languages keeps its columns
    plain = oriented(tokenized, [_example(None)] * 3)
    assert plain.examples == tokenized and plain.languages is None


def test_the_pair_languages_come_from_the_audit_fields(tmp_path):
    lines = [
        {"sent0": "hi", "sent1": "你好", "sent0_lang": "en", "sent1_lang": "zh"},
        {"sent0": "你好", "sent1": "hi", "sent0_lang": "zh", "sent1_lang": "en"},
        {"sent0": "hi", "sent1": "你好", "sent0_lang": "en"},  # half named: as if unnamed
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    examples = read_training_file(path, need_pairs=True, need_instructions=False)
    assert [example.pair_languages for example in examples] == [("en", "zh"), ("zh", "en"), None]
