"""`afp align` on 2 CPU processes (torchrun, gloo) against 1 process with the doubled batch: same losses, gradients,
adapter; stop and resume; launches that cannot work end every process with one line.

Each multi-process case starts ``torchrun --standalone --nproc-per-node 2`` as a subprocess: the product's command
(``-m afp_cli align``) or, for the one-step gradients, this file run as a script (``one-step`` below).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script by torchrun: find helpers

from helpers import DEMO_DATA, metrics, torchrun, write_recipe  # noqa: E402

# 8 training examples, global batch 4: 2 processes × 2 pairs; dropout off so both launches draw nothing at random
# fp32: one and two processes agree to fp32 rounding (1e-5); under auto a bf16 CPU would round to bf16
SETTINGS = {"train": {"max_steps": 3, "batch_size": 4, "precision": "fp32"}}


def afp_on_two_processes(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return torchrun("-m", "afp_cli", "align", *map(str, args), cwd=cwd)


@pytest.fixture
def recipe(tmp_path) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]) + "\n", encoding="utf-8")
    return write_recipe(tmp_path, data, **SETTINGS)


def adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter_model.safetensors")


def assert_same_adapter(actual: dict, expected: dict, atol: float) -> None:
    assert actual.keys() == expected.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=atol)


def logged_losses(run: Path) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "tokens_per_s"} for record in metrics(run)]


# ------------------------------------------------------------------------------- one step, gradients


def one_step(recipe: Path, gather_negatives: bool, indices: list[int] | None = None) -> dict:
    """Losses and LoRA gradients of the first micro-batch (``indices``: these training examples instead), on
    however many processes run this; the main process's view."""
    from afp_cli.align.config import load_config
    from afp_cli.align.distributed import start_processes
    from afp_cli.align.train import backward_micro_batch, setup_run
    from afp_cli.data.batches import micro_batch_indices
    from afp_cli.data.training_records import read_training_file

    config = load_config(recipe, [f"mcl.gather_negatives={str(gather_negatives).lower()}"])
    processes = start_processes("cpu", 1, find_unused_parameters=False)
    examples = read_training_file(Path(config.data.train_file), True, True)
    run = setup_run(config, examples, processes, Console(file=io.StringIO()), write_files=False)
    if indices is None:
        indices = micro_batch_indices(0, config.train.batch_size, len(run.train_set), config.train.seed)
    result = backward_micro_batch(run, indices)
    gradients = {name: param.grad.clone() for name, param in run.model.named_parameters() if param.requires_grad}
    return {"mcl": result.mcl, "cit": result.cit, "total": result.total, "gradients": gradients, "indices": indices}


def test_one_step_on_two_processes_equals_one_process_with_the_doubled_batch(recipe, tmp_path):
    launched = torchrun(__file__, "one-step", str(recipe), str(tmp_path / "step"), cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    gathered = torch.load(tmp_path / "step-gather.pt")
    local = torch.load(tmp_path / "step-local.pt")

    single = one_step(recipe, gather_negatives=True)  # 1 process, batch 4: the same 4 examples in one batch
    assert gathered["indices"] == single["indices"]
    assert gathered["mcl"] == pytest.approx(single["mcl"], abs=1e-5)
    assert gathered["cit"] == pytest.approx(single["cit"], abs=1e-5)
    assert single["mcl"] > 0.5 and single["cit"] > 1.0  # real losses, not zeros that would match anyway
    assert gathered["gradients"].keys() == single["gradients"].keys()
    for name, gradient in single["gradients"].items():
        torch.testing.assert_close(gathered["gradients"][name], gradient, rtol=0, atol=1e-5)
    assert any(float(gradient.abs().max()) > 1e-3 for gradient in single["gradients"].values())

    # local negatives: each process contrasts its own 2 pairs; the logged MCL is the mean of the two local losses
    halves = [
        one_step(recipe, gather_negatives=True, indices=single["indices"][:2]),
        one_step(recipe, gather_negatives=True, indices=single["indices"][2:]),
    ]
    assert local["mcl"] == pytest.approx((halves[0]["mcl"] + halves[1]["mcl"]) / 2, abs=1e-5)
    assert abs(local["mcl"] - single["mcl"]) > 1e-3  # fewer negatives: a different loss
    assert local["cit"] == pytest.approx(single["cit"], abs=1e-5)  # CIT does not depend on the negatives


# ------------------------------------------------------------------------------- whole runs


@pytest.mark.slow
def test_a_two_process_run_ends_with_the_adapter_of_one_process_with_the_doubled_batch(recipe, tmp_path):
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align

    launched = afp_on_two_processes(recipe, "output_dir=two", cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("done: 3 steps") == 1  # the main process speaks, the other is silent
    config = load_config(recipe, [f"output_dir={tmp_path / 'one'}"])
    align(config, console=Console(file=io.StringIO()))

    assert_same_adapter(adapter(tmp_path / "two"), adapter(tmp_path / "one"), atol=1e-5)
    two, one = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert [record["step"] for record in two] == [1, 2, 3]
    for key in ("loss", "mcl", "cit"):
        assert [record[key] for record in two] == pytest.approx([record[key] for record in one], abs=1e-4)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3


@pytest.mark.slow
def test_gradient_accumulation_on_two_processes_equals_one_process(recipe, tmp_path):
    # 2 micro-batches of 4 per step (2 pairs per process): no all-reduce and no optimizer step until the second
    # (afp tells accelerate which micro-batch ends the step; DeepSpeed steps on that flag)
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align

    settings = ["train.grad_accumulation=2", "train.max_steps=2"]
    launched = afp_on_two_processes(recipe, "output_dir=two", *settings, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    align(load_config(recipe, [f"output_dir={tmp_path / 'one'}", *settings]), console=Console(file=io.StringIO()))
    align(
        load_config(recipe, [f"output_dir={tmp_path / 'no-accumulation'}", "train.max_steps=2"]),
        console=Console(file=io.StringIO()),
    )

    assert_same_adapter(adapter(tmp_path / "two"), adapter(tmp_path / "one"), atol=1e-5)
    assert [record["step"] for record in metrics(tmp_path / "two")] == [1, 2]
    other = adapter(tmp_path / "no-accumulation")  # accumulation changed the training: the match above means something
    assert max(float((other[name] - value).abs().max()) for name, value in adapter(tmp_path / "one").items()) > 1e-4


@pytest.mark.slow
def test_stop_and_resume_on_two_processes_ends_like_an_uninterrupted_run(recipe, tmp_path, run_cli):
    whole = afp_on_two_processes(recipe, "output_dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = afp_on_two_processes(recipe, "output_dir=split", "--stop-after", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "split" / "checkpoints" / "step-00000002"
    assert json.loads((checkpoint / "state.json").read_text())["world_size"] == 2
    assert len(torch.load(checkpoint / "optimizer.pt", weights_only=False)["rng"]) == 2  # each process's RNG

    # another world size is refused before anything is touched
    recipe_before = (tmp_path / "split" / "recipe.yaml").read_bytes()
    code, _, err = run_cli("align", recipe, f"output_dir={tmp_path / 'split'}", "--resume")
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "step-00000002 was written by 2 process(es) but 1 were launched: resume with 2" in err
    assert (tmp_path / "split" / "recipe.yaml").read_bytes() == recipe_before

    resumed = afp_on_two_processes(recipe, "output_dir=split", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "(step 2)" in resumed.stdout
    assert_same_adapter(adapter(tmp_path / "split"), adapter(tmp_path / "whole"), atol=0)
    assert logged_losses(tmp_path / "split") == logged_losses(tmp_path / "whole")


@pytest.mark.slow
def test_auto_pooling_on_two_processes_pools_where_one_process_would(recipe, tmp_path, run_cli):
    two = afp_on_two_processes(recipe, "output_dir=two", "mcl.pooling=avg-auto", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("pooling avg-auto → avg-") == 1  # measured by every process, said by the main one
    code, _, err = run_cli("align", recipe, f"output_dir={tmp_path / 'one'}", "mcl.pooling=avg-auto")
    assert code == 0, err
    for folder in ("one", "two"):
        assert yaml.safe_load((tmp_path / folder / "recipe.yaml").read_text())["mcl"]["pooling"] == "avg-auto"
    chosen = {
        folder: yaml.safe_load((tmp_path / folder / "recipe.yaml").read_text())["mcl"]["pooling_resolved"]
        for folder in ("one", "two")
    }
    assert chosen["one"] == chosen["two"] and chosen["one"].startswith("avg-")
    tables = [json.loads((tmp_path / folder / "summary.json").read_text())["pooling_auto"] for folder in ("one", "two")]
    means = [[row["mean"] for row in table["retrieval_by_layer"]] for table in tables]
    assert means[0] == pytest.approx(means[1]) and len(means[0]) == 5  # the same pairs, every layer, both runs


# ------------------------------------------------------------------------------- bad launches


def test_a_global_batch_that_does_not_split_over_the_processes_ends_every_process_with_one_line(recipe, tmp_path):
    launched = afp_on_two_processes(recipe, "train.batch_size=5", cwd=tmp_path)
    assert launched.returncode != 0
    errors = [line for line in launched.stderr.splitlines() if line.startswith("error: ")]
    assert (
        errors
        == [
            "error: train.batch_size=5 is the global batch, split over the 2 processes launched: it must "
            "be a multiple of 2 (e.g. train.batch_size=6)"
        ]
        * 2
    ), launched.stderr
    # torchrun's report: the first process to exit 2 makes torchrun stop the other, which may be killed (SIGTERM)
    # after printing its line but before its own exit 2 registers; so at least one, and no other exit code
    assert launched.stderr.count("exitcode  : 2") >= 1, launched.stderr
    assert all(code in ("2", "-15") for code in re.findall(r"exitcode\s+: (-?\d+)", launched.stderr)), launched.stderr
    assert "afp_cli/" not in launched.stderr  # no traceback from afp (torchrun prints its own report)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, engine", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed-zero2", "DEEPSPEED")])
def test_the_shipped_accelerate_configs_load(name, engine):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(Path(__file__).resolve().parents[1] / "recipes" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == engine and config.num_processes == 8
    if engine == "FSDP":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if engine == "DEEPSPEED":
        assert (
            config.deepspeed_config["zero_stage"] == 2 and config.deepspeed_config["offload_optimizer_device"] == "cpu"
        )


if __name__ == "__main__":  # torchrun __file__ one-step RECIPE OUT: gradients with gathered and with local negatives
    _, _, recipe_path, out = sys.argv
    for gather, suffix in ((True, "gather"), (False, "local")):
        step = one_step(Path(recipe_path), gather)
        if torch.distributed.get_rank() == 0:
            torch.save(step, f"{out}-{suffix}.pt")
