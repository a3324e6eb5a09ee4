"""`afp analyze loss` on tiny models: the numbers equal hand computations, adapters differ from the base, bad input
is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import DEMO_DATA, quiet, write_recipe

from afp_cli.analyze.loss_run import APPEND_EOS, DEFAULT_MAX_LENGTH, DEFAULT_POOLING, LEARN_PROMPT, LossConfig
from afp_cli.data.tokenize import IGNORE_INDEX

DEMO_LINES = DEMO_DATA.read_text(encoding="utf-8").splitlines()


def afp_file(folder: Path, lines: list[str], name: str = "held_out.jsonl") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def only_fields(lines: list[str], *keys: str) -> list[str]:
    return [json.dumps({key: json.loads(line)[key] for key in keys}, ensure_ascii=False) for line in lines]


def report(folder: Path) -> dict:
    return json.loads((folder / "loss.json").read_text(encoding="utf-8"))


def hand_scores(model_dir: Path, data: Path, layer: int) -> dict[str, float]:
    """Each example alone (no padding, no batching): transformers' own loss, and retrieval by explicit cosines."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from afp_cli.data.batches import tokenize_examples
    from afp_cli.data.training_records import read_training_file
    from afp_cli.model.pooling import Pooling
    from afp_cli.model.representations import sentence_vectors

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    examples = read_training_file(data, True, True)
    tokenized, _ = tokenize_examples(examples, tokenizer, 512, True, True, learn_prompt=False, append_eos=True)
    summed, tokens = 0.0, 0
    sources, targets = [], []
    with torch.no_grad():
        for item in tokenized:
            ids, labels = torch.tensor([item.instruction_ids]), torch.tensor([item.instruction_labels])
            count = int((labels[0, 1:] != IGNORE_INDEX).sum())
            summed += model(input_ids=ids, labels=labels).loss.item() * count
            tokens += count
            for column, sentence in zip((sources, targets), item.sentences, strict=True):
                ids = torch.tensor([sentence])
                column.append(sentence_vectors(model, ids, torch.ones_like(ids), Pooling("last", layer))[0])

    def top1(queries, keys) -> float:
        def cosine(u, v):
            return float(u @ v / (u.norm() * v.norm()))

        hits = [max(range(len(keys)), key=lambda j: cosine(query, keys[j])) == i for i, query in enumerate(queries)]
        return sum(hits) / len(hits)

    return {
        "cit_loss": summed / tokens,
        "answer_tokens": tokens,
        "retrieval_top1": top1(sources, targets),
        "retrieval_top1_reverse": top1(targets, sources),
    }


def test_defaults_are_align_defaults():
    import typer.main

    from afp_cli.align.config import CITConfig, DataConfig, MCLConfig
    from afp_cli.commands.analyze import app

    assert DEFAULT_POOLING == MCLConfig.__dataclass_fields__["pooling"].default == "last-1"
    assert DEFAULT_MAX_LENGTH == DataConfig.__dataclass_fields__["max_length"].default
    assert (LEARN_PROMPT, APPEND_EOS) == (CITConfig().learn_prompt, CITConfig().append_eos) == (False, True)
    command = typer.main.get_command(app).commands["loss"]
    defaults = {param.name: param.default for param in command.params}
    for name in ("pooling", "max_length", "max_examples", "batch_size", "seed", "device", "dtype"):
        assert defaults[name] == LossConfig.__dataclass_fields__[name].default, name


def test_shared_options_have_their_one_spelling():
    from helpers import CANONICAL, cli_commands

    options = {param.name: set(param.opts) for param in cli_commands()["analyze loss"].params}
    assert {name: options[name] for name in CANONICAL} == CANONICAL
    assert options["data"] == {"--data", "-d"} and options["allow_other_base"] == {"--allow-other-base"}


def test_loss_and_retrieval_equal_a_hand_computation(tmp_path, tiny_model_dir, run_cli):
    model_dir = tiny_model_dir("llama")
    lines = DEMO_LINES[:7]
    data = afp_file(tmp_path, lines)
    # batches of 3: two full and one of 1, each padded differently; the mean must still be over tokens
    code, out, err = run_cli(
        "analyze", "loss", "-m", model_dir, "-d", data, "-o", tmp_path / "rep", "--batch-size", "3", "--device", "cpu"
    )
    assert code == 0, err
    expected = hand_scores(model_dir, data, layer=1)
    written = report(tmp_path / "rep")
    (row,) = written["rows"]
    assert row["model"] == "base"
    assert row["cit_loss"] == pytest.approx(expected["cit_loss"], abs=1e-5)
    assert row["perplexity"] == pytest.approx(math.exp(expected["cit_loss"]), rel=1e-5)
    assert row["retrieval_top1"] == pytest.approx(expected["retrieval_top1"])  # a float32 mean of hits
    assert row["retrieval_top1_reverse"] == pytest.approx(expected["retrieval_top1_reverse"])
    assert (written["examples"], written["answer_tokens"]) == (7, expected["answer_tokens"])
    assert out.splitlines()[0] == (
        f"base: CIT loss {row['cit_loss']:.4f} · perplexity {row['perplexity']:.4f} · "
        f"top-1 sent0→sent1 {row['retrieval_top1']:.4f} · "
        f"top-1 sent1→sent0 {row['retrieval_top1_reverse']:.4f}"
    )
    markdown = (tmp_path / "rep" / "loss.md").read_text(encoding="utf-8")
    assert f"| base | 7 | {expected['answer_tokens']} | {row['cit_loss']:.4f} | – |" in markdown
    assert "chance 0.1429); sentence vectors: `last` pooling of layer 1 (0 = embeddings)" in markdown


def test_an_aligned_adapter_differs_from_the_base_and_the_base_row_is_the_plain_base(tmp_path, tiny_model_dir):
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align
    from afp_cli.analyze.loss_run import run_loss

    model_dir = tiny_model_dir("llama")
    recipe = write_recipe(
        tmp_path,
        afp_file(tmp_path, DEMO_LINES[:12], "train.jsonl"),
        model={"name_or_path": str(model_dir), "architecture": None},
        train={"max_steps": 3},
    )
    align(load_config(recipe), console=quiet())
    data = afp_file(tmp_path, DEMO_LINES[100:108])

    def scores(adapters: tuple[str, ...], folder: str) -> list[dict]:
        return run_loss(
            LossConfig(
                model=str(model_dir),
                data=data,
                output_dir=tmp_path / folder,
                adapters=adapters,
                batch_size=4,
                device="cpu",
            )
        )

    base, aligned = scores((str(tmp_path / "run"),), "with-adapter")
    (alone,) = scores((), "base-only")
    assert [base["model"], aligned["model"]] == ["base", "run"]
    for key in ("cit_loss", "perplexity", "retrieval_top1", "retrieval_top1_reverse"):
        assert base[key] == pytest.approx(alone[key], abs=1e-6)  # the adapter switched off really is the base
        assert aligned[f"{key}_change"] == pytest.approx(aligned[key] - base[key], abs=1e-12)
    assert abs(aligned["cit_loss"] - base["cit_loss"]) > 1e-3
    markdown = (tmp_path / "with-adapter" / "loss.md").read_text(encoding="utf-8")
    assert markdown.index("| base |") < markdown.index("| run |")


def test_afp_align_held_out_numbers_are_what_afp_analyze_loss_gives_on_the_held_out_lines(tmp_path, tiny_model_dir):
    # one scoring loop (afp_cli/model/scoring.py) for training's held-out slice and for analysis: the same numbers
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align
    from afp_cli.analyze.loss_run import run_loss
    from afp_cli.data.batches import split_held_out

    model_dir = tiny_model_dir("llama")
    lines = DEMO_LINES[:20]
    recipe = write_recipe(
        tmp_path,
        afp_file(tmp_path, lines, "train.jsonl"),
        data={"held_out": 6},
        model={"name_or_path": str(model_dir), "architecture": None},
        # afp analyze loss scores in fp32 on a CPU; auto would train and evaluate in bf16 on a bf16 CPU
        train={"max_steps": 2, "precision": "fp32"},
    )
    config = load_config(recipe)
    result = align(config, console=quiet())
    _, held_out = split_held_out(len(lines), config.data.held_out, config.train.seed)
    data = afp_file(tmp_path, [lines[index] for index in held_out])
    base, aligned = run_loss(
        LossConfig(
            model=str(model_dir),
            data=data,
            output_dir=tmp_path / "loss",
            batch_size=5,
            adapters=(str(tmp_path / "run"),),
            pooling=config.mcl.pooling,
            max_length=config.data.max_length,
            device="cpu",
        )
    )
    for key in ("cit_loss", "retrieval_top1"):
        assert base[key] == pytest.approx(result.held_out_before[key], abs=1e-5)
        assert aligned[key] == pytest.approx(result.held_out_after[key], abs=1e-5)
    assert abs(aligned["cit_loss"] - base["cit_loss"]) > 1e-3


@pytest.mark.parametrize(
    ("keys", "present", "absent"),
    [
        (("sent0", "sent1"), {"retrieval_top1", "retrieval_top1_reverse"}, {"cit_loss", "perplexity"}),
        (("clm_text", "clm_prompt_len"), {"cit_loss", "perplexity"}, {"retrieval_top1", "retrieval_top1_reverse"}),
    ],
)
def test_a_file_with_one_objective_reports_only_that_one(tmp_path, tiny_model_dir, keys, present, absent):
    from afp_cli.analyze.loss_run import run_loss

    data = afp_file(tmp_path, only_fields(DEMO_LINES[:5], *keys))
    (row,) = run_loss(
        LossConfig(
            model=str(tiny_model_dir("llama")), data=data, output_dir=tmp_path / "rep", max_examples=4, device="cpu"
        )
    )
    assert present <= set(row) and not absent & set(row)
    assert report(tmp_path / "rep")["examples"] == 4
    markdown = (tmp_path / "rep" / "loss.md").read_text(encoding="utf-8")
    assert ("CIT loss ↓" in markdown) == ("cit_loss" in present)
    assert ("top-1 sent0→sent1" in markdown) == ("retrieval_top1" in present)


def test_retrieval_at_another_pooling_uses_that_layer(tmp_path, tiny_model_dir):
    from afp_cli.analyze.loss_run import run_loss

    model_dir = tiny_model_dir("llama")
    data = afp_file(tmp_path, DEMO_LINES[:6])
    (row,) = run_loss(
        LossConfig(model=str(model_dir), data=data, output_dir=tmp_path / "rep", pooling="last-3", device="cpu")
    )
    expected = hand_scores(model_dir, data, layer=3)
    layer_one = hand_scores(model_dir, data, layer=1)
    assert (expected["retrieval_top1"], expected["retrieval_top1_reverse"]) != (
        layer_one["retrieval_top1"],
        layer_one["retrieval_top1_reverse"],
    )  # so the layer is really told apart
    assert (row["retrieval_top1"], row["retrieval_top1_reverse"]) == pytest.approx(
        (expected["retrieval_top1"], expected["retrieval_top1_reverse"])
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pooling": "first-1"}, "--pooling: 'first-1' is not one of last, avg, max, last-N, avg-N, max-N, auto, .*"),
        ({"pooling": "auto"}, r"--pooling: 'auto' is measured when `afp align` starts; give a layer \(afp analyze .*"),
        ({"max_examples": 0}, "--max-examples must be 1 or more, got 0"),
        ({"max_length": 4}, "--max-length must be 8 or more, got 4"),
    ],
)
def test_bad_settings_are_named(tmp_path, values, message):
    from afp_cli.errors import AfpError

    with pytest.raises(AfpError, match=f"^{message}$"):
        LossConfig(model="m", data=tmp_path / "d.jsonl", output_dir=tmp_path, **values)
