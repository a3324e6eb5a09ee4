"""Padding-free batches (data.packing): the layout, the same losses and LoRA gradients as right-padded rows, the
start-up check that falls back to padding where an architecture mixes packed texts, and real-token counting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from helpers import assert_same_step, lora_model, losses_and_gradients, write_recipe
from rich.console import Console

from afp_cli.align.config import build_config, load_config
from afp_cli.align.losses import objective
from afp_cli.align.step_speed import check_packing, packing_difference, packs_batches
from afp_cli.align.train import align
from afp_cli.data.batches import TokenizedExample, collate, tokenize_examples
from afp_cli.data.packing import bucket_width, fill_rows, pack, plan_rows
from afp_cli.data.tokenize import IGNORE_INDEX
from afp_cli.data.training_records import read_training_file
from afp_cli.model.tiny import build_model, tiny_architecture

DEMO_DATA = Path(__file__).resolve().parents[1] / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"


def test_pack_places_longest_first_and_restarts_positions_per_text_and_at_the_padding():
    texts = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]
    values, layout = pack(texts, pad_value=0, max_width=5)
    # first-fit decreasing: 5 fills row 0, 4 opens row 1, 3 opens row 2, 2 joins row 2 after the 3
    assert values.tolist() == [[4, 5, 6, 7, 8], [11, 12, 13, 14, 0], [1, 2, 3, 9, 10]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert layout.rows.tolist() == [2, 0, 2, 1] and layout.starts.tolist() == [0, 0, 3, 0]
    assert layout.token_count == 14 and layout.longest == 5
    hidden = values.unsqueeze(-1).float()  # unpacking gives back each text from column 0, as right padding does
    unpacked, real = layout.unpack(hidden)
    assert (unpacked.squeeze(-1) * real).long().tolist() == [
        [1, 2, 3, 0, 0],
        [4, 5, 6, 7, 8],
        [9, 10, 0, 0, 0],
        [11, 12, 13, 14, 0],
    ]
    assert real.sum(-1).tolist() == [3, 5, 2, 4]
    labels = fill_rows(texts, layout, IGNORE_INDEX, first_value=IGNORE_INDEX)
    assert labels[2].tolist() == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 10]  # no text predicts the next one's first token
    assert pack(texts, 0, max_width=4)[0].shape == (3, 5)  # never narrower than the longest text


def test_rows_share_the_tokens_evenly_rather_than_filling_the_widest_first():
    lengths = [96] * 8 + [32]  # 800 tokens, rows of at most 512: 512 + 288 would be 1,024 positions
    layout = plan_rows(lengths, max_width=512)
    assert tuple(layout.position_ids.shape) == (2, 416)
    assert plan_rows(lengths, max_width=512, bucket=True).position_ids.shape[1] == 448  # 416 → 7 × 64
    assert tuple(plan_rows([10, 12, 9], max_width=512).position_ids.shape) == (1, 31)  # cut to what the row holds


def test_bucketed_widths_are_few():
    assert [bucket_width(n) for n in (1, 8, 9, 17, 33, 64, 65, 96, 129, 512)] == [
        8,
        8,
        16,
        32,
        64,
        64,
        128,
        128,
        192,
        512,
    ]
    assert len({bucket_width(n) for n in range(1, 513)}) == 11


def _tokenized(tokenizer, count=8, learn_prompt=False):
    examples = read_training_file(DEMO_DATA, True, True)[:count]
    tokenized, _ = tokenize_examples(examples, tokenizer, 96, True, True, learn_prompt, True)
    return tokenized


@pytest.mark.parametrize(
    "model_type, pooling",
    [("llama", "last-1"), ("llama", "avg-2"), ("llama", "max"), ("gpt2", "last-1"), ("qwen2", "last")],
)
def test_packed_batch_gives_the_right_padded_batch_losses_and_lora_gradients(tiny_tokenizer, model_type, pooling):
    tokenized = _tokenized(tiny_tokenizer)
    model = lora_model(model_type, tiny_tokenizer)
    padded = collate(tokenized, tiny_tokenizer.pad_token_id)
    # rows up to 192 wide: several instruction texts (41-82 tokens) share a row, as do the sentences (12-39)
    packed = collate(tokenized, tiny_tokenizer.pad_token_id, packing=True, max_width=192)
    assert padded.sentence_mask[:, -1].eq(0).any() and packed.sentence_mask is None  # right padding vs packing
    assert packed.sentence_ids.shape[0] < padded.sentence_ids.shape[0]
    assert packed.instruction_ids.shape[0] < padded.instruction_ids.shape[0]
    assert_same_step(losses_and_gradients(model, padded, pooling), losses_and_gradients(model, packed, pooling))


def test_a_target_at_a_texts_first_token_is_not_learned_from_the_text_before_it(tiny_tokenizer):
    # with learn_prompt and no BOS, a padded row never predicts its first token; a packed row must not either
    tokenized = [TokenizedExample([], ids, list(ids)) for ids in ([11, 12, 13, 14], [21, 22, 23], [31, 32, 33, 34, 35])]
    model = lora_model("llama", tiny_tokenizer)
    config = build_config({"model": {"name_or_path": "x"}, "data": {"train_file": "x"}, "mcl": {"weight": 0.0}})
    padded = objective(model, collate(tokenized, tiny_tokenizer.pad_token_id), config)
    packed_batch = collate(tokenized, tiny_tokenizer.pad_token_id, packing=True, bucket=True)
    assert packed_batch.instruction_ids.shape == (2, 8)  # 5 tokens → rows 8 wide, which hold the 4 and the 3
    packed = objective(model, packed_batch, config)
    assert packed.cit == pytest.approx(padded.cit, abs=1e-5)


def test_packed_batches_count_the_same_real_tokens_and_fewer_positions(tiny_tokenizer):
    tokenized = _tokenized(tiny_tokenizer, count=16)
    real = sum(len(sentence) for example in tokenized for sentence in example.sentences)
    real += sum(len(example.instruction_ids) for example in tokenized)
    padded = collate(tokenized, tiny_tokenizer.pad_token_id)
    packed = collate(tokenized, tiny_tokenizer.pad_token_id, packing=True, max_width=96)
    assert padded.token_count == packed.token_count == real
    assert padded.position_count == padded.sentence_ids.numel() + padded.instruction_ids.numel()
    assert real <= packed.position_count < 0.9 * padded.position_count


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2", "gpt_neox"])
def test_the_start_up_check_passes_architectures_that_keep_packed_texts_apart(tiny_tokenizer, model_type):
    model = build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0)
    model.config.use_cache = False
    assert packing_difference(model) < 1e-5
    assert model.training  # the check runs in eval mode and gives the model back as it found it


@pytest.mark.parametrize("model_type", ["xglm", "opt", "bloom"])
def test_architectures_that_mix_packed_texts_train_padded_with_a_warning(tiny_tokenizer, model_type):
    # transformers 5.24: XGLM and OPT count positions without the position ids, BLOOM's ALiBi ignores them
    model = build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0)
    model.config.use_cache = False
    assert packing_difference(model) > 1e-2
    config = build_config({"model": {"name_or_path": "x"}, "data": {"train_file": "x", "packing": True}})
    console = Console(file=io.StringIO(), width=400)
    assert packs_batches(model, config, console) is False
    assert f"data.packing: {model_type} does not keep packed texts apart" in console.file.getvalue()
    assert config.data.packing is True  # the recipe keeps what was asked: a resume compares equal
    assert check_packing(build_model(tiny_architecture("llama"), tiny_tokenizer), console) is True


def _recipe(folder: Path, model_type: str, packing: bool) -> Path:
    """The shared tiny recipe (fp32 pinned: packed and padded runs agree to fp32 rounding, 1e-4) on 20 demo lines,
    4 steps of 6."""
    data = folder / "data.jsonl"
    data.write_text("\n".join(DEMO_DATA.read_text(encoding="utf-8").splitlines()[:20]) + "\n", encoding="utf-8")
    return write_recipe(folder, data, model_type, data={"packing": packing}, train={"max_steps": 4, "batch_size": 6})


def test_align_with_packing_trains_as_the_padded_run_does(tmp_path):
    runs = {}
    for packing in (False, True):
        folder = tmp_path / str(packing)
        folder.mkdir()
        config = load_config(_recipe(folder, "llama", packing))
        result = align(config, console=Console(file=io.StringIO(), width=200))
        records = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        runs[packing] = (records, result)
        assert yaml.safe_load((folder / "run" / "recipe.yaml").read_text())["data"]["packing"] is packing
    (padded, padded_result), (packed, packed_result) = runs[False], runs[True]
    assert len(padded) == len(packed) == 4
    for before, after in zip(padded, packed):  # four optimizer steps later still the same run, to rounding
        for key in ("loss", "mcl", "cit"):
            assert after[key] == pytest.approx(before[key], abs=1e-4), (key, before, after)
    for key, value in padded_result.held_out_after.items():
        assert packed_result.held_out_after[key] == pytest.approx(value, abs=1e-4)


def test_align_on_an_architecture_that_mixes_packed_texts_trains_padded_says_so_and_resumes(tmp_path):
    recipe = _recipe(tmp_path, "opt", True)
    console = Console(file=io.StringIO(), width=400)
    align(load_config(recipe), console=console, stop_after=2)
    assert "data.packing: opt does not keep packed texts apart" in console.file.getvalue()
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["data"]["packing"] is True
    assert align(load_config(recipe), resume=True, console=console).steps == 4
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    # the same losses as a run asked for padded batches: the resumed run trained padded too
    padded = tmp_path / "padded"
    padded.mkdir()
    align(load_config(_recipe(padded, "opt", False)), console=console)
    for line, padded_line in zip(metrics, (padded / "run" / "metrics.jsonl").read_text().splitlines(), strict=True):
        assert json.loads(line)["loss"] == pytest.approx(json.loads(padded_line)["loss"], abs=1e-6)
