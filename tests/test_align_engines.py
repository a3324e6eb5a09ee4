"""What afp does differently under DeepSpeed and FSDP (afp_cli/align/distributed.py), checked on the CPU.

The engines themselves need GPUs (bench/align_engines.py runs them; bench/RESULTS.md has its figures). These tests
pin afp's side of the contract with accelerate: gradient accumulation tells DeepSpeed which micro-batch ends a
step, DeepSpeed's float gradient norm still feeds the divergence check, the optimizer follows ZeRO-Offload, and a
model that DeepSpeed casts to bf16 is loaded in bf16 with its buffers, so its forward still runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from afp_cli.align.distributed import AcceleratedProcesses


class RecordingAccelerator:
    """Stands in for accelerate's Accelerator: records what afp tells it."""

    def __init__(self, deepspeed_config: dict | None = None, norm=None):
        plugin = None if deepspeed_config is None else SimpleNamespace(deepspeed_config=deepspeed_config)
        self.state = SimpleNamespace(deepspeed_plugin=plugin)
        self.sync_gradients = True
        self.flags_at_backward: list[bool] = []
        self.norm = norm

    def backward(self, loss):
        self.flags_at_backward.append(self.sync_gradients)
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return self.norm


def processes_with(accelerator: RecordingAccelerator, engine: str = "DeepSpeed") -> AcceleratedProcesses:
    processes = AcceleratedProcesses.__new__(AcceleratedProcesses)  # no process group: only the adapter methods
    processes.accelerator = accelerator
    processes.engine = engine
    return processes


def test_only_the_last_micro_batch_of_a_step_synchronises_gradients():
    # DeepSpeed steps its optimizer inside backward whenever sync_gradients is set: with 3 micro-batches per step
    # it must step once, after the third, or each micro-batch would be a step of its own
    accelerator = RecordingAccelerator({"bf16": {"enabled": True}})
    processes = processes_with(accelerator)
    weight = torch.ones(2, requires_grad=True)
    for micro in range(3):
        processes.backward((weight * (micro + 1)).sum(), grad_accumulation=3, last_micro_batch=micro == 2)
    assert accelerator.flags_at_backward == [False, False, True]
    assert accelerator.sync_gradients  # left on for the optimizer wrapper's step() that follows
    assert weight.grad.tolist() == [6.0, 6.0]  # the engine scales; afp's adapter passes the loss unscaled


@pytest.mark.parametrize("reported, expected", [(2.5, 2.5), (float("inf"), float("inf"))])
def test_a_gradient_norm_deepspeed_reports_as_a_float_reaches_the_divergence_check_as_a_tensor(reported, expected):
    processes = processes_with(RecordingAccelerator({}, norm=reported))
    norm = processes.clip_grad_norm(None, [], 1.0)
    assert isinstance(norm, torch.Tensor) and float(norm) == expected
    assert bool(torch.isfinite(norm)) == (expected != float("inf"))
    assert processes_with(RecordingAccelerator({}, norm=None)).clip_grad_norm(None, [], 1.0) is None


@pytest.mark.parametrize(
    "config, offloads",
    [
        ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, True),
        ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}}, True),
        ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}}, False),
        ({"zero_optimization": {"stage": 2}}, False),
    ],
)
def test_the_optimizer_follows_zero_offload(config, offloads):
    assert processes_with(RecordingAccelerator(config)).offloads_optimizer is offloads
    assert processes_with(RecordingAccelerator(None), engine="FSDP").offloads_optimizer is False


@pytest.mark.parametrize(
    "config, dtype",
    [
        ({"bf16": {"enabled": True}}, torch.bfloat16),
        ({"bf16": {"enabled": "true"}}, torch.bfloat16),
        ({"fp16": {"enabled": True}}, torch.float16),
        ({"bf16": {"enabled": False}}, None),
        ({}, None),
    ],
)
def test_deepspeed_mixed_precision_decides_the_dtype_weights_are_loaded_in(config, dtype):
    assert processes_with(RecordingAccelerator(config))._deepspeed_weights_dtype() == dtype
    assert processes_with(RecordingAccelerator(None), engine="FSDP")._deepspeed_weights_dtype() is None


def test_a_full_fine_tuning_model_loaded_in_deepspeeds_dtype_runs_where_casting_only_its_weights_fails(tmp_path):
    # XGLM adds fp32 sinusoidal positions (a buffer) to its embeddings. DeepSpeed >= 0.18 casts parameters only and
    # turns autocast off inside its engine: on an fp32-loaded model the first layer norm then sees fp32 input and
    # bf16 weights (seen on an H200). Loading in the engine's dtype casts the buffers too.
    from afp_cli.align.config import build_config
    from afp_cli.align.train import load_base_model
    from afp_cli.model.tiny import tiny_architecture, train_tokenizer

    config = build_config(
        {
            "model": {"architecture": tiny_architecture("xglm"), "tokenizer_vocab_size": 300},
            "lora": {"enabled": False},
            "data": {"train_file": "unused.jsonl"},
        }
    )
    tokenizer = train_tokenizer(["a small text to train a tokenizer on", "一个很小的文本"] * 20, vocab_size=300)
    ids = torch.tensor([tokenizer("a small text")["input_ids"]])

    as_recipe = load_base_model(config, tokenizer, "cpu")
    assert {buffer.dtype for buffer in as_recipe.buffers() if buffer.is_floating_point()} == {torch.float32}
    for parameter in as_recipe.parameters():  # what DeepSpeed's engine does to it
        parameter.data = parameter.data.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="expect.*scalar type (of )?Float"):
        as_recipe(input_ids=ids)

    as_engine = load_base_model(config, tokenizer, "cpu", engine_dtype=torch.bfloat16)
    tensors = [*as_engine.parameters(), *(b for b in as_engine.buffers() if b.is_floating_point())]
    assert {tensor.dtype for tensor in tensors} == {torch.bfloat16}
    assert torch.isfinite(as_engine(input_ids=ids).logits).all()


def test_a_resumed_run_steps_with_the_schedules_learning_rate_whatever_the_engine_restored(tmp_path):
    # DeepSpeed restores its own optimizer from its checkpoint folder; whether or not that puts the learning rate
    # back, the first resumed step must use the schedule's rate, as the uninterrupted run does
    from afp_cli.align.checkpoint import TrainingState, load_checkpoint, save_checkpoint

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
        return model, optimizer, scheduler

    model, optimizer, scheduler = setup()
    for _ in range(3):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    expected = optimizer.param_groups[0]["lr"]
    assert expected == pytest.approx(1 / 4)
    engine_folder = tmp_path / "engine-shards"
    engine_folder.mkdir()
    (engine_folder / "shard-0.pt").write_bytes(b"weights and optimizer, as the engine wrote them")
    checkpoint = save_checkpoint(
        tmp_path, model, optimizer, scheduler, TrainingState(3, {}), keep=1, engine_state=engine_folder
    )

    model, optimizer, scheduler = setup()
    restored = []
    state = load_checkpoint(checkpoint, model, optimizer, scheduler, load_engine_state=restored.append)
    assert restored == [checkpoint / "engine"] and state.step == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)  # not the 1.0 it was built with
