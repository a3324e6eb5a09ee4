"""`afp align` end to end on tiny random models: loss falls, resume is exact, the adapter reloads, bad input exits 2."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import DEMO_DATA, metrics, quiet, write_recipe
from rich.console import Console

from afp_cli.align.config import load_config
from afp_cli.align.train import align
from afp_cli.data.batches import micro_batch_indices


@pytest.fixture
def data_file(tmp_path) -> Path:
    lines = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "xglm", "bloom"])
def test_a_few_steps_lower_the_combined_loss(tmp_path, data_file, model_type):
    # 8 training examples and batch size 8: every step sees the same examples, so losses are comparable
    config = load_config(write_recipe(tmp_path, data_file, model_type))
    result = align(config, console=quiet())
    logged = metrics(Path(config.output_dir))
    assert [record["step"] for record in logged] == list(range(1, 13))
    first, last = logged[0], logged[-1]
    assert last["loss"] < 0.93 * first["loss"], (first, last)
    assert last["mcl"] < first["mcl"] and last["cit"] < first["cit"]
    assert first["loss"] == pytest.approx(first["mcl"] + 1.5 * first["cit"], rel=1e-5)
    assert result.held_out_after["cit_loss"] < result.held_out_before["cit_loss"]


def test_resumed_run_ends_with_the_same_adapter_as_an_uninterrupted_one(tmp_path, data_file):
    from safetensors.torch import load_file

    # LoRA dropout on, batches that change every step, grad accumulation: RNG, data position and optimizer state
    # must all be restored for the weights to match exactly
    settings = {
        "lora": {"dropout": 0.1},
        "train": {"batch_size": 3, "grad_accumulation": 2, "max_steps": 7, "scheduler": "cosine", "warmup_ratio": 0.3},
    }
    (tmp_path / "a").mkdir()
    whole = load_config(write_recipe(tmp_path / "a", data_file, **settings))
    align(whole, console=quiet())
    (tmp_path / "b").mkdir()
    split = load_config(write_recipe(tmp_path / "b", data_file, **settings))
    first = align(split, stop_after=3, console=quiet())
    assert first.stopped_early and first.steps == 3
    assert not (Path(split.output_dir) / "adapter_model.safetensors").exists()
    align(split, resume=True, console=quiet())

    expected = load_file(Path(whole.output_dir) / "adapter_model.safetensors")
    resumed = load_file(Path(split.output_dir) / "adapter_model.safetensors")
    assert expected.keys() == resumed.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0)
    losses = [record["loss"] for record in metrics(Path(whole.output_dir))]
    assert [record["loss"] for record in metrics(Path(split.output_dir))] == losses


def test_saved_adapter_reloads_to_identical_logits(tmp_path, data_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 3}))
    result = align(config, console=quiet())
    run = Path(config.output_dir)
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((run / "base_model").resolve())
    assert (run / "adapter_model.safetensors").is_file() and (run / "tokenizer.json").is_file()
    assert (run / "recipe.yaml").is_file() and json.loads((run / "summary.json").read_text())["steps"] == 3

    input_ids = torch.tensor([[1, 30, 31, 32, 33, 34]])
    trained = result.model.eval()
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"]), str(run)
    ).eval()
    base = AutoModelForCausalLM.from_pretrained(run / "base_model").eval()
    with torch.no_grad():
        expected = trained(input_ids=input_ids).logits
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, expected, rtol=0, atol=0)
        assert not torch.allclose(base(input_ids=input_ids).logits, expected)  # the adapter does change the model


@pytest.mark.parametrize("model_type", ["llama", "xglm"])  # XGLM ties its LM head to the adapted embeddings
def test_merge_writes_a_plain_model_with_the_adapter_folded_in(tmp_path, data_file, model_type):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = load_config(write_recipe(tmp_path, data_file, model_type, train={"max_steps": 2}, merge=True))
    align(config, console=quiet())
    run = Path(config.output_dir)
    merged = AutoModelForCausalLM.from_pretrained(run / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "base_model"), str(run)).eval()
    input_ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=input_ids).logits, adapted(input_ids=input_ids).logits, rtol=1e-4, atol=1e-5
        )


def test_lm_eval_loads_the_adapter_as_it_is(tmp_path, data_file):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 2}))
    result = align(config, console=quiet())
    run = Path(config.output_dir)
    lm = HFLM(pretrained=str(run / "base_model"), peft=str(run), batch_size=1, device="cpu")
    request = Instance("loglikelihood", {}, ("I like green tea.", " 我喜欢绿茶。"), 0)
    ((score, _),) = lm.loglikelihood([request], disable_tqdm=True)

    tokenizer = lm.tokenizer
    context = tokenizer("I like green tea.")["input_ids"]
    continuation = tokenizer(" 我喜欢绿茶。", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        log_probs = torch.log_softmax(result.model.eval()(input_ids=ids).logits[0, :-1], dim=-1)
    expected = sum(log_probs[len(context) - 1 + i, token].item() for i, token in enumerate(continuation))
    assert score == pytest.approx(expected, abs=1e-3)


def test_full_finetuning_trains_every_weight_and_saves_a_model(tmp_path, data_file):
    from transformers import AutoModelForCausalLM

    config = load_config(write_recipe(tmp_path, data_file, lora={"enabled": False}, train={"max_steps": 2}))
    align(config, console=quiet())
    run = Path(config.output_dir)
    assert not (run / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(run)  # a complete model folder
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trainable_parameters"] == summary["total_parameters"]


@pytest.mark.parametrize("weights, logged", [({"mcl": {"weight": 0.0}}, {"cit"}), ({"cit": {"weight": 0.0}}, {"mcl"})])
def test_single_objective_ablations(tmp_path, data_file, weights, logged):
    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 2}, **weights))
    align(config, console=quiet())
    record = metrics(Path(config.output_dir))[0]
    assert {"mcl", "cit"} & record.keys() == logged


def test_micro_batches_cover_each_epoch_exactly_once_and_depend_only_on_the_seed():
    stream = [index for micro in range(10) for index in micro_batch_indices(micro, 3, 10, seed=5)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]
    assert micro_batch_indices(4, 3, 10, seed=5) == micro_batch_indices(4, 3, 10, seed=5)
    assert micro_batch_indices(0, 3, 10, seed=6) != micro_batch_indices(0, 3, 10, seed=5)


def test_gradient_checkpointing_gives_the_same_training_as_without(tmp_path, data_file):
    from safetensors.torch import load_file

    outputs = []
    for checkpointing in (False, True):
        folder = tmp_path / str(checkpointing)
        folder.mkdir()
        config = load_config(
            write_recipe(folder, data_file, train={"max_steps": 3, "gradient_checkpointing": checkpointing})
        )
        align(config, console=quiet())
        outputs.append(load_file(Path(config.output_dir) / "adapter_model.safetensors"))
    for name in outputs[0]:
        torch.testing.assert_close(outputs[1][name], outputs[0][name], rtol=1e-5, atol=1e-6)


def test_a_local_pretrained_model_trains_and_its_adapter_points_back_to_it(tmp_path, data_file, tiny_model_dir):
    from afp_cli.model.adapter_base import check_adapter_base

    model_dir = tiny_model_dir("gpt2")
    recipe = write_recipe(
        tmp_path, data_file, model={"name_or_path": str(model_dir), "architecture": None}, train={"max_steps": 2}
    )
    config = load_config(recipe)
    align(config, console=quiet())
    run = Path(config.output_dir)
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir)
    # afp's default targets: the embeddings and every linear layer of the blocks, never the (tied) LM head
    assert sorted(json.loads((run / "adapter_config.json").read_text())["target_modules"]) == [
        "attn.c_attn",
        "attn.c_proj",
        "mlp.c_fc",
        "mlp.c_proj",
        "transformer.wte",
    ]
    assert not (run / "base_model").exists()
    check_adapter_base(run, str(model_dir))  # the adapter is recognised as belonging to this base


def test_hard_negatives_enter_the_mcl_loss(tmp_path, data_file):
    from afp_cli.data.batches import collate, tokenize_examples
    from afp_cli.data.training_records import read_training_file
    from afp_cli.model.tiny import train_tokenizer

    records = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines()]
    with_negatives = tmp_path / "hard.jsonl"
    with_negatives.write_text(
        "".join(
            json.dumps({**record, "hard_neg": records[(index + 1) % len(records)]["sent1"]}, ensure_ascii=False) + "\n"
            for index, record in enumerate(records)
        ),
        encoding="utf-8",
    )
    examples = read_training_file(with_negatives, need_pairs=True, need_instructions=True)
    assert examples[0].hard_negative == records[1]["sent1"]
    tokenizer = train_tokenizer([record["clm_text"] for record in records], vocab_size=300)
    tokenized, _ = tokenize_examples(examples[:4], tokenizer, 48, True, True, False, True)
    batch = collate(tokenized, tokenizer.pad_token_id)
    assert batch.sentences_per_example == 3 and batch.sentence_ids.shape[0] == 12

    config = load_config(
        write_recipe(
            tmp_path, with_negatives, mcl={"hard_negative_weight": 1.0}, cit={"weight": 0.0}, train={"max_steps": 6}
        )
    )
    align(config, console=quiet())
    logged = metrics(Path(config.output_dir))
    # with 8 pairs and 8 hard negatives the first loss is near log(16), not log(8)
    assert logged[0]["mcl"] > 2.2 and logged[-1]["mcl"] < logged[0]["mcl"]


def test_tensorboard_events_are_written_when_asked(tmp_path, data_file):
    pytest.importorskip("tensorboard")
    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 2, "tensorboard": True}))
    align(config, console=quiet())
    events = list((Path(config.output_dir) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_held_out_evaluation_runs_every_eval_every_steps_whatever_the_logging_interval(tmp_path, data_file):
    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 6, "log_every": 4, "eval_every": 3}))
    console = Console(file=io.StringIO(), width=400)  # wide: the progress line on one line
    align(config, console=console)
    logged = metrics(Path(config.output_dir))
    assert [record["step"] for record in logged] == [3, 4, 6]
    assert [("held_out_retrieval_top1" in record) for record in logged] == [True, False, False]
    assert 0.0 <= logged[0]["held_out_retrieval_top1"] <= 1.0 and logged[0]["held_out_cit_loss"] > 0
    # the progress line names both directions, with the logged numbers
    first = logged[0]
    expected = (
        f"held-out retrieval sent0→sent1 {first['held_out_retrieval_top1']:.3f} / "
        f"sent1→sent0 {first['held_out_retrieval_top1_reverse']:.3f} · "
        f"held-out cit_loss {first['held_out_cit_loss']:.3f}"
    )
    step_line = next(line for line in console.file.getvalue().splitlines() if line.startswith("step 3:"))
    assert step_line.endswith(expected), step_line


def test_a_recipe_data_build_section_builds_the_mixture_once_and_trains_on_it(tmp_path, monkeypatch):
    parallel = tmp_path / "pairs.tsv"
    records = [json.loads(line) for line in DEMO_DATA.read_text(encoding="utf-8").splitlines()[:40]]
    parallel.write_text("en\tzh\n" + "".join(f"{r['sent0']}\t{r['sent1']}\n" for r in records), encoding="utf-8")
    monkeypatch.setenv("AFP_CACHE_DIR", str(tmp_path / "cache"))
    build = {"mode": "translation", "languages": ["en", "zh"], "parallel": "pairs.tsv", "change_prob": 0.5}
    recipe = write_recipe(
        tmp_path, parallel, data={"train_file": None, "build": build, "held_out": 8}, train={"max_steps": 2}
    )
    config = load_config(recipe)
    assert config.data.build["parallel"] == str(parallel)  # resolved against the recipe's folder
    align(config, console=quiet())
    built = list((tmp_path / "cache" / "data").glob("*.jsonl"))
    assert len(built) == 1 and len(built[0].read_text(encoding="utf-8").splitlines()) == 40
    first_build = built[0].stat().st_mtime_ns
    align(load_config(recipe), overwrite=True, console=quiet())
    assert built[0].stat().st_mtime_ns == first_build  # cached: the same settings and inputs are not rebuilt


def test_bf16_autocast_trains_with_finite_losses(tmp_path, data_file):
    # the CUDA default (precision auto -> bf16) exercised on the CPU: losses stay finite and fall
    config = load_config(write_recipe(tmp_path, data_file, train={"max_steps": 6, "precision": "bf16"}))
    result = align(config, console=quiet())
    logged = metrics(Path(config.output_dir))
    assert all(math.isfinite(record["loss"]) for record in logged)
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert result.held_out_after["cit_loss"] > 0
