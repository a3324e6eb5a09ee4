"""train.compile: compiled decoder blocks give the eager step's losses and LoRA gradients, run only in training
passes, keep MCL's early stop and the parameter names, and compile a bounded number of graphs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from helpers import assert_same_step, lora_model, losses_and_gradients, write_recipe  # tests/ is on sys.path
from rich.console import Console

from afp_cli.align.config import build_config, load_config
from afp_cli.align.losses import objective
from afp_cli.align.step_speed import check_compile, compile_blocks
from afp_cli.align.train import align
from afp_cli.data.batches import collate, tokenize_examples
from afp_cli.data.training_records import read_training_file
from afp_cli.errors import AfpError
from afp_cli.model.blocks import decoder_layers

DEMO_DATA = Path(__file__).resolve().parents[1] / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts the graphs it was given."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def _batches(tokenizer, packing: bool):
    examples = read_training_file(DEMO_DATA, True, True)[:24]
    tokenized, _ = tokenize_examples(examples, tokenizer, 96, True, True, False, True)
    return [
        collate(tokenized[start : start + 8], tokenizer.pad_token_id, packing, bucket=True, max_width=96)
        for start in (0, 8, 16)
    ]


def test_compiled_blocks_run_only_in_training_passes_and_keep_the_early_stop_and_names(tiny_tokenizer):
    model = lora_model("llama", tiny_tokenizer)
    names = [name for name, _ in model.named_parameters()]
    batch = _batches(tiny_tokenizer, packing=False)[0]
    eager = losses_and_gradients(model, batch)
    backend = CountingBackend()
    assert compile_blocks(model, backend=backend) == 4
    calls = []
    handles = [
        block.register_forward_pre_hook(lambda module, args, index=index: calls.append(index))
        for index, block in enumerate(decoder_layers(model))
    ]
    config = build_config(
        {
            "model": {"name_or_path": "x"},
            "data": {"train_file": "x"},
            "mcl": {"weight": 1.0},
            "cit": {"weight": 0.0},
            "train": {"batch_size": 8},
        }
    )
    objective(model, batch, config)  # MCL alone: pooling layer 1, so only block 0 runs
    assert calls == [0] and backend.graphs >= 1
    for handle in handles:
        handle.remove()
    assert_same_step(eager, losses_and_gradients(model, batch))
    graphs = backend.graphs
    model.eval()
    with torch.no_grad():
        objective(model, batch, config)
    model.train()
    assert backend.graphs == graphs  # evaluation runs eagerly: nothing new compiled
    assert [name for name, _ in model.named_parameters()] == names  # checkpoints and adapters keep their keys


def test_compile_refuses_sharding_engines_and_a_cpu_without_a_cpp_compiler(monkeypatch):
    class Sharded:
        shards_weights, engine = True, "FSDP"

    class Plain:
        shards_weights, engine = False, "plain"

    with pytest.raises(AfpError, match="not supported with FSDP"):
        check_compile("cpu", Sharded())
    import torch._inductor.cpp_builder as cpp_builder

    def missing():
        raise RuntimeError("No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    with pytest.raises(AfpError, match="needs a C\\+\\+ compiler .*No working C\\+\\+ compiler found"):
        check_compile("cpu", Plain())
    check_compile("cuda", Plain())  # CUDA compiles with Triton: no C++ check


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True])
def test_inductor_compiled_steps_give_the_eager_losses_and_lora_gradients(tiny_tokenizer, packing):
    import torch._dynamo

    torch._dynamo.reset()
    model = lora_model("llama", tiny_tokenizer)
    batches = _batches(tiny_tokenizer, packing)
    eager = [losses_and_gradients(model, batch) for batch in batches]
    compile_blocks(model)
    from torch._dynamo.utils import counters

    counters.clear()
    for batch, expected in zip(batches, eager):  # three batches of different widths (and rows, when packed)
        assert_same_step(expected, losses_and_gradients(model, batch))
    # one graph per kind of block input (mask or none, static then dynamic shapes), not one per batch or block
    assert counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])


@pytest.mark.slow
def test_compiled_blocks_under_gradient_checkpointing_recompute_to_the_eager_gradients(tiny_tokenizer):
    model = lora_model("llama", tiny_tokenizer)
    batch = _batches(tiny_tokenizer, packing=True)[0]
    eager = losses_and_gradients(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    compile_blocks(model)  # the recomputation in backward runs the compiled forward too (grad on, training mode)
    for _ in range(2):
        assert_same_step(eager, losses_and_gradients(model, batch))


@pytest.mark.slow
def test_align_with_compile_and_packing_trains_as_the_eager_padded_run_does(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(DEMO_DATA.read_text(encoding="utf-8").splitlines()[:20]) + "\n", encoding="utf-8")
    records = {}
    for name, switches in (("eager", {}), ("compiled", {"data": {"packing": True}, "train": {"compile": True}})):
        folder = tmp_path / name
        folder.mkdir()
        # the shared tiny recipe (fp32 whatever the CPU: the comparison is at fp32 rounding), 4 steps of 6
        path = write_recipe(
            folder,
            data,
            data={"packing": False, **switches.get("data", {})},
            train={"max_steps": 4, "batch_size": 6, **switches.get("train", {})},
        )
        align(load_config(path), console=Console(file=io.StringIO()))
        records[name] = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    for eager, compiled in zip(records["eager"], records["compiled"], strict=True):
        for key in ("loss", "mcl", "cit"):
            assert compiled[key] == pytest.approx(eager[key], abs=1e-4), (key, eager, compiled)
