"""bf16 on CPUs that have it (issue #32 part 1): how auto resolves, and that a bf16-autocast align run trains,
keeps its trainable state in fp32, records what it ran in, and repeats exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DEMO_DATA, metrics, write_recipe
from rich.console import Console
from safetensors.torch import load_file

from afp_cli.align.config import load_config
from afp_cli.align.train import align
from afp_cli.model import precision as precision_module
from afp_cli.model.loading import resolve_dtype
from afp_cli.model.precision import cpu_has_fast_bf16, resolve_precision, scoring_dtype_name

NO_BF16_LINE = "this CPU has no AVX512-BF16/AMX: precision auto → fp32"


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cpu_bf16(monkeypatch):
    """``cpu_bf16(True/False)``: pretend this CPU has (or lacks) AVX512-BF16/AMX."""

    def pretend(fast: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast)

    return pretend


# ------------------------------------------------------------------------------------------ resolution


@pytest.mark.parametrize(
    ("requested", "device", "fast_cpu", "name", "note"),
    [
        ("auto", "cpu", True, "bf16", None),
        ("auto", "cpu", False, "fp32", NO_BF16_LINE),
        ("auto", "cuda", False, "bf16", None),
        ("auto", "cuda:1", False, "bf16", None),
        ("fp32", "cpu", True, "fp32", None),
        ("fp32", "cuda", True, "fp32", None),
        ("bf16", "cpu", True, "bf16", None),
        ("bf16", "cpu", False, "bf16", "this CPU has no AVX512-BF16/AMX: bf16 is emulated, slow (not wrong)"),
        ("bf16", "cuda", False, "bf16", None),
    ],
)
def test_precision_resolution_table(cpu_bf16, requested, device, fast_cpu, name, note):
    cpu_bf16(fast_cpu)
    resolved = resolve_precision(requested, device)
    assert (resolved.name, resolved.note) == (name, note)


def test_bf16_autocast_computes_linear_layers_in_bf16_and_fp32_does_not():
    layer = torch.nn.Linear(8, 4)
    inputs = torch.randn(2, 8)
    with resolve_precision("bf16", "cpu").autocast()():
        assert layer(inputs).dtype == torch.bfloat16
    with resolve_precision("fp32", "cpu").autocast()():
        assert layer(inputs).dtype == torch.float32


def test_cpu_capability_matches_the_cpu_flags():
    # torch's report against the kernel's: on Linux /proc/cpuinfo lists amx_bf16 / avx512_bf16 when present
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_fast_bf16() == bool(flags & {"amx_bf16", "avx512_bf16", "amx_tile"})


@pytest.mark.parametrize("cpu_scores_in_bf16", [True, False])
def test_evaluate_and_analyze_dtype_auto(monkeypatch, cpu_bf16, cpu_scores_in_bf16):
    monkeypatch.setattr(precision_module, "CPU_SCORING_IN_BF16", cpu_scores_in_bf16)
    cpu_bf16(True)
    expected = torch.bfloat16 if cpu_scores_in_bf16 else torch.float32
    assert resolve_dtype("auto", "cpu") == expected
    assert scoring_dtype_name("cpu") == str(expected).removeprefix("torch.")
    cpu_bf16(False)
    assert resolve_dtype("auto", "cpu") == torch.float32  # never emulated bf16 unasked
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32  # an explicit dtype is respected
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


# ------------------------------------------------------------------------------------------ align in bf16


def test_bf16_step_keeps_lora_weights_and_optimizer_state_fp32(tmp_path, data_file):
    from afp_cli.align.distributed import start_processes
    from afp_cli.align.losses import objective
    from afp_cli.align.train import setup_run, train_step
    from afp_cli.data.batches import collate
    from afp_cli.data.training_records import read_training_file

    config = load_config(write_recipe(tmp_path, data_file, train={"precision": "bf16"}))
    processes = start_processes("cpu", 1, find_unused_parameters=False)
    examples = read_training_file(Path(config.data.train_file), True, True)
    run = setup_run(config, examples, processes, Console(file=io.StringIO()), write_files=False)
    assert run.precision.name == "bf16"
    # the loss autocast leaves in fp32 (a softmax / cross-entropy under autocast runs in fp32), its matmuls in bf16
    batch = collate(run.train_set[:4], run.tokenizer.pad_token_id, False)
    matmul_dtypes = []
    for module in run.model.modules():  # the first linear layer (a LoRA-wrapped projection of the first block)
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _module, _inputs, output: matmul_dtypes.append(output.dtype))
            break
    with run.autocast():
        parts = objective(run.model, batch, config)
    assert parts.total.dtype == torch.float32 and matmul_dtypes and set(matmul_dtypes) == {torch.bfloat16}
    train_step(run, 0)
    trainable = [param for param in run.model.parameters() if param.requires_grad]
    assert trainable and all(param.dtype == torch.float32 for param in trainable)
    states = [run.optimizer.state[param] for param in trainable]
    assert all(state["exp_avg"].dtype == torch.float32 for state in states)
    assert all(state["exp_avg_sq"].dtype == torch.float32 for state in states)
    assert any(float(state["exp_avg"].abs().max()) > 0 for state in states)  # the step did update them


def run_align(tmp_path: Path, data_file: Path, name: str, steps: int = 8, **train) -> tuple[Path, str]:
    folder = tmp_path / name
    folder.mkdir()
    config = load_config(write_recipe(folder, data_file, train={"max_steps": steps, **train}))
    out = io.StringIO()
    align(config, console=Console(file=out, width=200))
    return Path(config.output_dir), out.getvalue()


def test_bf16_align_trains_records_bf16_and_repeats_exactly(tmp_path, data_file):
    first, printed = run_align(tmp_path, data_file, "a", precision="bf16")
    second, _ = run_align(tmp_path, data_file, "b", precision="bf16")
    losses = [record["loss"] for record in metrics(first)]
    assert losses[-1] < 0.8 * losses[0]
    assert json.loads((first / "summary.json").read_text())["precision"] == "bf16"
    assert "bf16 autocast" in printed.splitlines()[1]  # the start-up line (after "training data: ...")

    # two runs with the same seed on one machine: identical losses and adapters
    assert [record["loss"] for record in metrics(second)] == losses
    weights, again = load_file(first / "adapter_model.safetensors"), load_file(second / "adapter_model.safetensors")
    assert weights.keys() == again.keys() and weights
    assert all(weights[name].dtype == torch.float32 for name in weights)  # the saved adapter is fp32
    assert all(torch.equal(weights[name], again[name]) for name in weights)


def test_auto_on_a_cpu_without_bf16_runs_fp32_and_says_why(tmp_path, data_file, cpu_bf16):
    cpu_bf16(False)
    output_dir, printed = run_align(tmp_path, data_file, "plain", steps=2, precision="auto")
    assert NO_BF16_LINE in printed
    assert json.loads((output_dir / "summary.json").read_text())["precision"] == "fp32"
    assert yaml.safe_load((output_dir / "recipe.yaml").read_text())["train"]["precision"] == "auto"


def test_auto_on_a_bf16_cpu_runs_bf16_and_resumes_as_auto(tmp_path, data_file, cpu_bf16):
    cpu_bf16(True)
    folder = tmp_path / "resumed"
    folder.mkdir()
    config = load_config(write_recipe(folder, data_file, train={"max_steps": 4, "precision": "auto"}))
    out = io.StringIO()
    align(config, console=Console(file=out, width=200), stop_after=2)
    assert "bf16 autocast" in out.getvalue() and "→ fp32" not in out.getvalue()
    saved = yaml.safe_load((Path(config.output_dir) / "recipe.yaml").read_text())
    assert saved["train"]["precision"] == "auto"  # what was asked, not what it resolved to
    result = align(config, resume=True, console=Console(file=io.StringIO()))  # not refused
    assert result.steps == 4
    assert json.loads((Path(config.output_dir) / "summary.json").read_text())["precision"] == "bf16"
