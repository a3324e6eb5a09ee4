"""`afp align` against the faults of real machines: SIGTERM and Ctrl-C, a full disk, damaged checkpoints, a changed
recipe on resume. Each fault is made for real where a test can (a signal sent from outside, a file-size limit the
libraries' own writers hit) and injected at one place otherwise (ENOSPC where a finished file is put in place).

Every case asserts the exit code, the one line on stderr (no traceback), what is on disk afterwards, and, where a
run goes on, that it ends with the adapter of the uninterrupted run, bit for bit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DEMO_DATA, quiet, write_recipe

import afp_cli.align.train as train_module
import afp_cli.text_files as text_files
from afp_cli.align.checkpoint import MANIFEST, OPTIMIZER, STATE, WEIGHTS, checkpoint_damage

ROOT = Path(__file__).resolve().parents[1]
LINES = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]
# dropout, a warmed-up cosine schedule and batches that change every step: weights, optimizer, schedule, RNG and
# data position must all come back for a resumed run to end with the uninterrupted run's adapter
SETTINGS = {
    "lora": {"dropout": 0.1},
    "train": {
        "max_steps": 8,
        "batch_size": 4,
        "save_every": 2,
        "keep_checkpoints": 2,
        "scheduler": "cosine",
        "warmup_ratio": 0.25,
    },
}
FREE = r"\(\d+(\.\d)? (B|KiB|MiB|GiB|TiB) free there\)"


def make_recipe(folder: Path, **train) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return write_recipe(folder, data, lora=SETTINGS["lora"], train={**SETTINGS["train"], **train})


def adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter_model.safetensors")


def assert_same_adapter(run: Path, expected: dict[str, torch.Tensor]) -> None:
    found = adapter(run)
    assert found.keys() == expected.keys() and len(found) > 0
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def assert_error(code: int, err: str, pattern: str) -> str:
    assert code == 2, err
    line = one_line(err)
    assert line.startswith("error: ") and re.search(pattern, line), line
    return line


def unwrapped(out: str) -> str:
    """stdout as one line: the console wraps long lines (a path) at its width."""
    return "".join(out.splitlines())


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_names(run: Path) -> list[str]:
    return sorted(path.name for path in (run / "checkpoints").iterdir())


def leftovers(run: Path) -> list[str]:
    """Temporary files and folders of the atomic writers anywhere in the run folder."""
    return sorted(str(path.relative_to(run)) for path in run.rglob("*") if re.match(r"\.tmp-|\..*\.tmp$", path.name))


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else b"<dir>"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The adapter of the uninterrupted run every resumed run must end with."""
    from afp_cli.align.config import load_config

    recipe = make_recipe(tmp_path_factory.mktemp("reference"))
    train_module.align(load_config(recipe), console=quiet())
    return adapter(recipe.parent / "run")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run stopped after step 4 (--stop-after): checkpoints of steps 2 and 4, to copy and then damage."""
    from afp_cli.align.config import load_config

    recipe = make_recipe(tmp_path_factory.mktemp("stopped"))
    train_module.align(load_config(recipe), stop_after=4, console=quiet())
    return recipe.parent


@pytest.fixture
def run_copy(tmp_path, stopped_run) -> Path:
    """A copy of ``stopped_run``: the recipe, its data and the run folder (``output_dir`` follows the copy)."""
    folder = tmp_path / "copy"
    shutil.copytree(stopped_run, folder)
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    recipe["output_dir"], recipe["data"]["train_file"] = str(folder / "run"), str(folder / "data.jsonl")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    saved = yaml.safe_load((folder / "run" / "recipe.yaml").read_text())
    saved["output_dir"], saved["data"]["train_file"] = recipe["output_dir"], recipe["data"]["train_file"]
    (folder / "run" / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return folder


# ------------------------------------------------------------------------------------------- signals


def test_sigterm_from_outside_stops_after_the_step_with_a_checkpoint_and_resume_ends_as_if_never_stopped(
    tmp_path, run_cli
):
    from afp_cli.align.config import load_config

    recipe = make_recipe(tmp_path / "stopped", max_steps=30, save_every=0)
    run = tmp_path / "stopped" / "run"
    process = start_afp("align", recipe)
    deadline = time.monotonic() + 120
    while not ((run / "metrics.jsonl").exists() and len(steps_logged_safely(run)) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    seen = steps_logged_safely(run)[-1]
    process.send_signal(signal.SIGTERM)  # what Slurm, Kubernetes and torchrun send before they kill
    out, err = process.communicate(timeout=120)

    assert process.returncode == 143, err
    stopped = int(re.fullmatch(r"stopped after step (\d+) \(SIGTERM\); continue with --resume", one_line(err))[1])
    assert seen <= stopped < 30  # the step it was in, finished, not the run
    assert checkpoint_names(run) == [f"step-{stopped:08d}"]
    assert checkpoint_damage(run / "checkpoints" / f"step-{stopped:08d}") is None
    assert (run / "checkpoints" / f"step-{stopped:08d}" / MANIFEST).is_file()
    assert steps_logged(run) == list(range(1, stopped + 1))
    assert not (run / "adapter_model.safetensors").exists() and leftovers(run) == []

    code, out, err = run_cli("align", recipe, "--resume")
    assert code == 0, err
    assert f"resumed from {run / 'checkpoints' / f'step-{stopped:08d}'} (step {stopped})" in unwrapped(out)
    whole = make_recipe(tmp_path / "whole", max_steps=30, save_every=0)
    train_module.align(load_config(whole), console=quiet())
    assert_same_adapter(run, adapter(whole.parent / "run"))
    assert steps_logged(run) == list(range(1, 31))


def start_afp(*arguments) -> subprocess.Popen:
    """``afp ARGUMENTS`` in a process of its own, for signals from outside and processes side by side."""
    return subprocess.Popen(
        [sys.executable, "-m", "afp_cli", *map(str, arguments)],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def steps_logged_safely(run: Path) -> list[int]:
    """The steps of the complete lines so far (the run may be writing the next one)."""
    text = (run / "metrics.jsonl").read_text()
    return [json.loads(line)["step"] for line in text.splitlines(keepends=True) if line.endswith("\n")]


def signal_at_step(monkeypatch, step: int, *signals: int) -> None:
    """Send ``signals`` to this process once the metrics of ``step`` are written: a known step, for real."""
    real = train_module.append_metrics

    def append_then_signal(path, record, writer):
        real(path, record, writer)
        if record["step"] == step:
            for number in signals:
                os.kill(os.getpid(), number)

    monkeypatch.setattr(train_module, "append_metrics", append_then_signal)


@pytest.mark.parametrize(
    "signals, name, code",
    [
        ((signal.SIGINT,), "SIGINT", 130),
        ((signal.SIGINT, signal.SIGINT), "SIGINT", 130),  # torchrun forwarding the terminal's Ctrl-C at once
        ((signal.SIGTERM, signal.SIGTERM), "SIGTERM", 143),  # a launcher forwarding what the scheduler also sent
        ((signal.SIGINT, signal.SIGTERM), "SIGTERM", 143),  # the scheduler's signal decides the exit code
    ],
)
def test_ctrl_c_and_repeated_sigterm_stop_after_the_step_they_arrive_in(
    tmp_path, run_cli, monkeypatch, reference, signals, name, code
):
    recipe = make_recipe(tmp_path)
    run = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_at_step(monkeypatch, 3, *signals)
    exit_code, _, err = run_cli("align", recipe)
    assert exit_code == code, err
    assert one_line(err) == f"stopped after step 3 ({name}); continue with --resume"
    assert checkpoint_names(run) == ["step-00000002", "step-00000003"] and leftovers(run) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back

    monkeypatch.undo()
    exit_code, _, err = run_cli("align", recipe, "--resume")
    assert exit_code == 0, err
    assert_same_adapter(run, reference)


def test_a_second_ctrl_c_while_a_checkpoint_is_written_leaves_the_previous_one_and_no_half_written_one(
    tmp_path, run_cli, monkeypatch, reference
):
    import afp_cli.align.checkpoint as checkpoint_module

    recipe = make_recipe(tmp_path)
    run = tmp_path / "run"
    real_save = checkpoint_module.torch.save
    monkeypatch.setattr(train_module._InterruptFlag, "_REPEAT_WINDOW_S", -1.0)  # the second press, a second later

    def save_interrupted(payload, path):
        if "step-00000004" in str(path):
            Path(path).write_bytes(b"PK\x03\x04 half an optimizer")
            os.kill(os.getpid(), signal.SIGINT)  # noted: stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # now: KeyboardInterrupt, here, mid-write
        real_save(payload, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_interrupted)
    code, _, err = run_cli("align", recipe)
    assert code == 130, err
    assert one_line(err) == (
        f"aborted at once (a second Ctrl-C); last complete checkpoint: "
        f"{run / 'checkpoints' / 'step-00000002'}; continue with --resume"
    )
    assert checkpoint_names(run) == ["step-00000002"] and leftovers(run) == []
    assert checkpoint_damage(run / "checkpoints" / "step-00000002") is None

    monkeypatch.undo()
    code, _, err = run_cli("align", recipe, "--resume")
    assert code == 0, err
    assert_same_adapter(run, reference)


def test_what_a_killed_run_left_half_written_is_ignored_and_removed_on_resume(run_copy, run_cli, reference):
    run = run_copy / "run"
    planted = [
        run / "checkpoints" / ".tmp-step-00000006" / WEIGHTS,
        run / ".tmp-outputs" / "adapter_config.json",
        run / ".recipe.yaml.k2j4.tmp",
        run / ".tmp-base_model" / "config.json",
        run / "checkpoints" / ".engine-00000006" / "shard-0.pt",
    ]
    for path in planted:  # what SIGKILL leaves in the middle of each writer
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 5, "loss": 4.1')  # half a line
    code, out, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert code == 0 and err == "", err
    assert f"resumed from {run / 'checkpoints' / 'step-00000004'} (step 4)" in unwrapped(out)
    assert leftovers(run) == [] and not (run / "checkpoints" / ".engine-00000006").exists()
    assert steps_logged(run) == list(range(1, 9))
    assert_same_adapter(run, reference)


def test_resume_where_no_checkpoint_was_written_yet_starts_the_run(tmp_path, run_cli, reference):
    recipe = make_recipe(tmp_path)
    code, _, err = run_cli("align", recipe, "--resume")  # a requeued job's first start: no folder yet
    assert code == 0 and err == "", err
    assert_same_adapter(tmp_path / "run", reference)

    # killed (SIGKILL) before its first checkpoint: the recipe, the base model and a few metrics lines
    run = tmp_path / "run"
    for name in (
        "checkpoints",
        "adapter_model.safetensors",
        "adapter_config.json",
        "summary.json",
        "README.md",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    code, _, err = run_cli("align", recipe, "--resume")
    assert code == 0, err
    assert one_line(err) == (
        f"warning: {run}: its run stopped before its first checkpoint: starting it again from step 0"
    )
    assert_same_adapter(run, reference)
    assert steps_logged(run) == list(range(1, 9))

    (run / "notes.txt").write_text("not afp's")  # a folder holding anything else is not taken
    shutil.rmtree(run / "checkpoints")
    code, _, err = run_cli("align", recipe, "--resume")
    assert_error(code, err, r"run: nothing to resume \(no checkpoint in .*checkpoints\)")


def test_a_signal_before_the_first_step_stops_after_it(tmp_path, run_cli, monkeypatch):
    import afp_cli.align.run_output as run_output

    real = run_output.folder_atomically

    def sigterm_while_the_base_model_is_saved(final, *args, **kwargs):
        if Path(final).name == "base_model":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(final, *args, **kwargs)

    monkeypatch.setattr(run_output, "folder_atomically", sigterm_while_the_base_model_is_saved)
    code, _, err = run_cli("align", make_recipe(tmp_path))
    assert code == 143 and one_line(err) == "stopped after step 1 (SIGTERM); continue with --resume", err
    assert checkpoint_names(tmp_path / "run") == ["step-00000001"]


# ------------------------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes of any file fail in this process (EFBIG), in whatever library writes them."""
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # its default ends the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)


def disk_full_at(monkeypatch, matches) -> list[Path]:
    """ENOSPC when a finished file or folder whose target ``matches`` is put in place; returns the targets so far."""
    real = text_files._put_in_place
    targets: list[Path] = []

    def put_in_place(source: Path, target: Path) -> None:
        targets.append(target)
        if matches(source, target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real(source, target)

    monkeypatch.setattr(text_files, "_put_in_place", put_in_place)
    return targets


@pytest.mark.parametrize(
    "where, pattern",
    [
        ("recipe.yaml", r"could not write .*run/recipe.yaml: no space left on device " + FREE),
        ("base_model", r"could not write the built base model \(.*run/base_model\): no space left on device " + FREE),
    ],
)
def test_a_full_disk_before_the_first_checkpoint_is_one_line_and_leaves_nothing(
    tmp_path, run_cli, monkeypatch, where, pattern
):
    recipe = make_recipe(tmp_path)
    disk_full_at(monkeypatch, lambda source, target: target.name == where)
    code, _, err = run_cli("align", recipe)
    line = assert_error(code, err, pattern)
    assert line.endswith("(no checkpoint was written yet: the run left nothing behind)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "where, what, kept, written",
    [
        ("step-00000004", r"the checkpoint of step 4 \(.*checkpoints/step-00000004\)", ["step-00000002"], []),
        (".tmp-outputs", r"the adapter \(.*run\)", ["step-00000006", "step-00000008"], []),
        # the adapter is complete and in place; the summary written after it is not there
        ("summary.json", r".*run/summary.json", ["step-00000006", "step-00000008"], ["adapter_model.safetensors"]),
    ],
)
def test_a_full_disk_after_a_checkpoint_names_it_and_keeps_it_intact(
    tmp_path, run_cli, monkeypatch, reference, where, what, kept, written
):
    recipe = make_recipe(tmp_path)
    run = tmp_path / "run"
    disk_full_at(monkeypatch, lambda source, target: where in (target.name, source.parent.name))
    code, _, err = run_cli("align", recipe)
    assert_error(
        code,
        err,
        rf"^error: could not write {what}: no space left on device {FREE} \(last complete "
        rf"checkpoint: .*checkpoints/{kept[-1]}; continue with --resume\)$",
    )
    assert checkpoint_names(run) == kept and leftovers(run) == []
    assert all(checkpoint_damage(run / "checkpoints" / name) is None for name in kept)
    assert [name for name in ("adapter_model.safetensors", "summary.json") if (run / name).exists()] == written

    # --resume on the still-full disk: the same kind of line, and the checkpoint still there
    disk_full_at(monkeypatch, lambda source, target: True)
    code, _, err = run_cli("align", recipe, "--resume")
    assert_error(
        code,
        err,
        rf"could not write .*run/recipe.yaml: no space left on device {FREE} \(last complete "
        rf"checkpoint: .*{kept[-1]}; continue with --resume\)",
    )
    assert checkpoint_names(run) == kept and leftovers(run) == []

    monkeypatch.undo()
    code, _, err = run_cli("align", recipe, "--resume")
    assert code == 0, err
    assert_same_adapter(run, reference)


@pytest.mark.parametrize("failing", [WEIGHTS, OPTIMIZER])
def test_the_libraries_own_write_failures_are_recognised_safetensors_and_torch_save(
    tmp_path, run_cli, monkeypatch, stopped_run, failing
):
    # a file-size limit between the two files' sizes: safetensors' Rust writer or torch.save's zip writer fails
    sizes = {
        name: (stopped_run / "run" / "checkpoints" / "step-00000004" / name).stat().st_size
        for name in (WEIGHTS, OPTIMIZER)
    }
    assert sizes[WEIGHTS] < sizes[OPTIMIZER]
    limit = sizes[WEIGHTS] // 2 if failing == WEIGHTS else (sizes[WEIGHTS] + sizes[OPTIMIZER]) // 2
    real = train_module.save_checkpoint

    def save_with_a_limit(output_dir, model, optimizer, scheduler, state, *args):
        if state.step != 4:
            return real(output_dir, model, optimizer, scheduler, state, *args)
        with file_size_limit(limit):
            return real(output_dir, model, optimizer, scheduler, state, *args)

    monkeypatch.setattr(train_module, "save_checkpoint", save_with_a_limit)
    recipe = make_recipe(tmp_path)
    code, _, err = run_cli("align", recipe)
    assert_error(
        code,
        err,
        r"could not write the checkpoint of step 4 .*: file too large for the file-size limit "
        r"\(ulimit -f\) .*\(last complete checkpoint: .*step-00000002; continue with --resume\)",
    )
    assert checkpoint_names(tmp_path / "run") == ["step-00000002"] and leftovers(tmp_path / "run") == []


def test_a_metrics_line_the_disk_refuses_is_cut_off_again(tmp_path, run_cli, monkeypatch):
    real = train_module.append_metrics

    def append_with_a_limit(path, record, writer):
        if record["step"] != 3:
            return real(path, record, writer)
        with file_size_limit(path.stat().st_size + 10):  # ten bytes of the line fit, the rest does not
            return real(path, record, writer)

    monkeypatch.setattr(train_module, "append_metrics", append_with_a_limit)
    code, _, err = run_cli("align", make_recipe(tmp_path))
    assert_error(
        code,
        err,
        r"could not write .*run/metrics.jsonl: file too large .*\(last complete checkpoint: "
        r".*step-00000002; continue with --resume\)",
    )
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert text.endswith("\n") and steps_logged(tmp_path / "run") == [1, 2]


def test_the_writers_leave_nothing_half_written_when_the_disk_refuses(tmp_path):
    from afp_cli.text_files import write_all_atomically, write_atomically

    (tmp_path / "kept.md").write_text("the old report")
    with pytest.raises(text_files.DiskFault, match=r"could not write .*kept.md: file too large"):
        with file_size_limit(1000):
            write_atomically(tmp_path / "kept.md", "x" * 5000)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.md"]
    assert (tmp_path / "kept.md").read_text() == "the old report"

    # a report's files land together: the second one failing leaves the first unchanged too
    with pytest.raises(text_files.DiskFault, match=r"could not write .*b.json: file too large"):
        with file_size_limit(1000):
            write_all_atomically({tmp_path / "kept.md": "new", tmp_path / "b.json": "y" * 5000})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.md"]
    assert (tmp_path / "kept.md").read_text() == "the old report"


def test_replacing_folder_puts_the_old_contents_back_unless_the_new_are_kept(tmp_path):
    from afp_cli.text_files import replacing_folder

    def attempt(folder, keep, fail=True):
        with contextlib.suppress(KeyError):
            with replacing_folder(folder, keep_on_failure=lambda: keep):
                assert not folder.exists() or not any(folder.iterdir())  # emptied for the body
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "new.txt").write_text("new")
                if fail:
                    raise KeyError("the body failed")
        return sorted(path.name for path in tmp_path.rglob("*"))

    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("old")
    assert attempt(run, keep=False) == ["old.txt", "run"]  # put back, nothing of the new left, no .run.replaced
    assert attempt(run, keep=True) == ["new.txt", "run"]  # the new kept, the old gone
    assert attempt(run, keep=False, fail=False) == ["new.txt", "run"]
    assert attempt(tmp_path / "a" / "b", keep=False) == ["new.txt", "run"]  # the missing parents it made go too


def test_torch_save_failing_on_a_full_disk_is_told_from_other_runtime_errors(tmp_path, monkeypatch):
    torch_failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert text_files.write_fault(RuntimeError("CUDA out of memory"), tmp_path) is None  # not a write: a bug's
    assert text_files.write_fault(OSError(errno.ENOENT, "gone"), tmp_path) is None
    full = os.statvfs(tmp_path)

    class Full:  # statvfs of a disk with 4 KiB left
        f_flag, f_frsize, f_bavail = full.f_flag, 4096, 1

    monkeypatch.setattr(text_files.os, "statvfs", lambda path: Full)
    assert text_files.write_fault(torch_failure, tmp_path) == "no space left on device"
    from safetensors import SafetensorError

    error = SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")
    assert text_files.write_fault(error, tmp_path) == "disk quota exceeded"


@pytest.fixture
def no_loading_bars():
    """transformers read the CLI's switch for its "Loading weights" bar at import, which here came before the CLI."""
    import warnings

    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    yield
    if was_enabled:
        with warnings.catch_warnings():  # huggingface_hub warns that its own switch (the CLI's) wins: it may
            warnings.simplefilter("ignore")
            transformers_logging.enable_progress_bar()


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("full", "no space left on device"),
        ("output is a file", "a part of the path is a file, not a folder"),
    ],
)
def test_analyze_on_a_full_disk_or_an_unwritable_output_is_one_line_and_writes_no_report(
    tmp_path, run_cli, monkeypatch, tiny_model_dir, no_loading_bars, fault, reason
):
    data = tmp_path / "held_out.jsonl"
    data.write_text("\n".join(LINES[:4]) + "\n", encoding="utf-8")
    output = tmp_path / "rep"
    if fault == "full":
        disk_full_at(monkeypatch, lambda source, target: True)
    else:
        output.write_text("mine")
    model = tiny_model_dir("llama")
    before = tree(tmp_path)
    code, _, err = run_cli("analyze", "loss", "-m", model, "-d", data, "-o", output, "--device", "cpu")
    # the report's files are one set (report.write_all_atomically): the first refused one is named, none is written
    assert_error(code, err, rf"could not write the report \(.*rep/loss\.(md|json)\): {reason} {FREE}$")
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------- damaged checkpoints


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        (WEIGHTS, truncate, r"trainable.safetensors has [\d,]+ bytes, [\d,]+ were written"),
        (STATE, lambda path: path.write_text('{"step": 4, "world'), r"state.json has 18 bytes, [\d,]+ were written"),
        (OPTIMIZER, flip_a_byte, r"optimizer.pt: its checksum differs from the manifest's"),
        (OPTIMIZER, Path.unlink, r"optimizer.pt missing"),
        (MANIFEST, lambda path: path.write_text("{"), r"manifest.json is unreadable"),
    ],
)
def test_a_damaged_checkpoint_is_skipped_for_the_newest_intact_one(run_copy, run_cli, reference, name, damage, problem):
    run = run_copy / "run"
    damage(run / "checkpoints" / "step-00000004" / name)
    code, out, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert code == 0, err
    assert re.fullmatch(
        rf"warning: checkpoint .*step-00000004 is damaged \({problem}\): resuming from "
        r"step-00000002; the damaged one is kept as damaged-step-00000004",
        one_line(err),
    )
    assert f"resumed from {run / 'checkpoints' / 'step-00000002'} (step 2)" in unwrapped(out)
    assert_same_adapter(run, reference)
    assert checkpoint_names(run) == ["damaged-step-00000004", "step-00000006", "step-00000008"]


def test_no_intact_checkpoint_is_one_line_and_changes_nothing(run_copy, run_cli):
    run = run_copy / "run"
    truncate(run / "checkpoints" / "step-00000004" / WEIGHTS)
    (run / "checkpoints" / "step-00000002" / STATE).write_text("{}")
    before = tree(run)
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert_error(
        code,
        err,
        r"no intact checkpoint in .*run/checkpoints to resume from \(step-00000004: "
        r"trainable.safetensors has .* were written; step-00000002: state.json has 2 bytes, .*\): "
        r"start the run again with --overwrite",
    )
    assert tree(run) == before


def test_checkpoints_without_a_manifest_are_accepted_when_every_file_parses(run_copy, run_cli, reference):
    run = run_copy / "run"
    for step in ("step-00000002", "step-00000004"):  # as afp 0.x wrote them
        (run / "checkpoints" / step / MANIFEST).unlink()
    truncate(run / "checkpoints" / "step-00000004" / OPTIMIZER)
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert code == 0, err
    assert re.fullmatch(
        r"warning: checkpoint .*step-00000004 is damaged \(optimizer.pt does not parse\): resuming "
        r"from step-00000002; .*",
        one_line(err),
    )
    assert_same_adapter(run, reference)


# ------------------------------------------------------------------------------------------- a changed recipe


@pytest.mark.parametrize(
    "overrides, listed",
    [
        (["lora.r=4"], r"lora.r 8 → 4"),
        (["train.lr=0.001"], r"train.lr 0.005 → 0.001"),
        (["data.max_length=32"], r"data.max_length 48 → 32"),
        (["model.architecture.hidden_size=32"], r"model.architecture \(changed\)"),
        (
            ["train.seed=1", "mcl.temperature=0.1", "train.save_every=1"],
            r"mcl.temperature 0.05 → 0.1, train.seed 0 → 1",
        ),
    ],
)
def test_resume_with_a_recipe_that_changes_the_run_is_refused_listing_the_keys(run_copy, run_cli, overrides, listed):
    before = tree(run_copy)
    code, _, err = run_cli("align", run_copy / "recipe.yaml", *overrides, "--resume")
    line = assert_error(
        code,
        err,
        rf"--resume with a recipe that differs from the run's \(.*run/recipe.yaml\) in "
        rf"{listed}: a resume may change only train.max_steps, train.log_every, ",
    )
    assert "train.save_every 2" not in line  # an allowed change is not listed among the refused ones
    assert tree(run_copy) == before


def test_resume_may_lengthen_the_run_and_change_its_cadence(run_copy, run_cli):
    run = run_copy / "run"
    code, _, err = run_cli(
        "align", run_copy / "recipe.yaml", "train.max_steps=10", "train.save_every=3", "train.log_every=2", "--resume"
    )
    assert code == 0, err
    assert one_line(err) == (
        "warning: train.max_steps 8 → 10: the cosine schedule from step 4 on is the one of a "
        "10-step run, so the learning rate moves at the resume"
    )
    assert steps_logged(run) == [1, 2, 3, 4, 6, 8, 10]
    assert checkpoint_names(run) == ["step-00000009", "step-00000010"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 10
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["max_steps"] == 10


def test_resume_with_fewer_steps_than_the_checkpoint_is_refused(run_copy, run_cli):
    before = tree(run_copy)
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "train.max_steps=3", "--resume")
    assert_error(code, err, r"train.max_steps=3 lies before the checkpoint resumed \(step 4\): give at least 4$")
    assert tree(run_copy) == before


# ------------------------------------------------------------------------------------------- checkpoints that run code


class _RunsCode:
    """Unpickled, it calls exec: what a checkpoint copied from someone else may hold instead of optimizer state."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def rewrite_optimizer(checkpoint: Path, **extra) -> None:
    """Put ``extra`` into the checkpoint's optimizer.pt and rewrite its manifest, as whoever changed it would."""
    import afp_cli.align.checkpoint as checkpoint_module

    saved = torch.load(checkpoint / OPTIMIZER, weights_only=True)
    torch.save({**saved, **extra}, checkpoint / OPTIMIZER)
    digests = checkpoint_module._file_digests(checkpoint)
    (checkpoint / MANIFEST).write_text(json.dumps({"format": 1, "files": digests}))


def test_a_checkpoint_holds_only_what_weights_only_loading_reads(stopped_run):
    saved = torch.load(stopped_run / "run" / "checkpoints" / "step-00000004" / OPTIMIZER, weights_only=True)
    assert set(saved) == {"optimizer", "scheduler", "rng"} and saved["scheduler"]["last_epoch"] == 4
    assert len(saved["optimizer"]["state"]) > 0 and saved["rng"][0]["torch"].dtype == torch.uint8


def test_a_checkpoint_whose_optimizer_state_would_run_code_is_refused_without_running_it(run_copy, run_cli):
    run = run_copy / "run"
    marker = run_copy / "ran.txt"
    rewrite_optimizer(run / "checkpoints" / "step-00000004", optimizer=_RunsCode(marker))
    assert checkpoint_damage(run / "checkpoints" / "step-00000004") is None  # the manifest says it is whole
    before = tree(run)
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert_error(
        code,
        err,
        r"step-00000004/optimizer.pt: loading it would run Python code \(builtins\.exec\), .* "
        r"resume only from a checkpoint you wrote yourself, with --trust-checkpoint; nothing was changed",
    )
    assert not marker.exists() and tree(run) == before


def test_trust_checkpoint_resumes_from_one_that_pickles_a_harmless_object(run_copy, run_cli, reference):
    import datetime

    run = run_copy / "run"
    rewrite_optimizer(run / "checkpoints" / "step-00000004", written=datetime.date(2025, 1, 1))  # not weights-only
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "--resume")
    assert_error(code, err, r"optimizer.pt: loading it would run Python code \(datetime.date\)")
    code, _, err = run_cli("align", run_copy / "recipe.yaml", "--resume", "--trust-checkpoint")
    assert code == 0, err
    assert re.fullmatch(r"warning: .*optimizer.pt: loaded with Python's unpickler .*datetime.date", one_line(err))
    assert_same_adapter(run, reference)


# ------------------------------------------------------------------------------------------- one process per folder


def test_a_second_align_into_the_same_folder_is_refused_naming_the_first(tmp_path, run_cli):
    recipe = make_recipe(tmp_path, max_steps=30, save_every=0)
    run = tmp_path / "run"
    first = start_afp("align", recipe)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():  # the first holds the folder and trains
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        code, _, err = run_cli("align", recipe, "--resume")
        assert_error(
            code,
            err,
            rf"^error: {run}: in use by another afp process \(pid {first.pid} on .*: afp align {recipe}\); wait "
            r"for it to end, or if it is gone \(it ran on another host\) remove .*\.run\.afp\.lock or pass "
            r"--force-unlock$",
        )
        assert first.poll() is None  # the first runs on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143 and not (tmp_path / ".run.afp.lock").exists()


def tensorboard_scalars(run: Path) -> dict[int, dict[str, float]]:
    """What TensorBoard reads from the run's event files: step -> {tag: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[int, dict[str, float]] = {}
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for event in events.Scalars(tag):
                found.setdefault(event.step, {})[tag] = event.value
    return found


def test_tensorboard_events_the_disk_refuses_are_one_line_and_cut_off_again(tmp_path, run_cli, monkeypatch):
    pytest.importorskip("tensorboard")
    real = text_files._append_to
    events_written: list[int] = []

    def full_disk_at_the_fourth_events(path: Path, data: bytes) -> None:
        if path.name.startswith("events.out.tfevents."):
            events_written.append(len(data))
            if len(events_written) == 4:  # the file's header, steps 1 and 2, then step 3's events
                real(path, data[: len(data) // 2])  # half of them reached the disk, as a full disk leaves it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(text_files, "_append_to", full_disk_at_the_fourth_events)
    code, _, err = run_cli("align", make_recipe(tmp_path, log_every=1, tensorboard=True))
    assert_error(
        code,
        err,
        r"could not write the TensorBoard events \(.*run/tensorboard/events\.out\.tfevents\.[^)]*\): no space left on "
        rf"device {FREE} \(last complete checkpoint: .*step-00000002; continue with --resume\)",
    )
    assert len(events_written) == 4 and steps_logged(tmp_path / "run") == [1, 2, 3]  # metrics.jsonl comes first
    # the half-written events were cut off: TensorBoard reads steps 1 and 2 whole, with metrics.jsonl's values
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scalars = tensorboard_scalars(tmp_path / "run")
    assert sorted(scalars) == [1, 2]
    for record in logged[:2]:
        expected = {key: value for key, value in record.items() if key != "step" and isinstance(value, (int, float))}
        assert scalars[record["step"]].keys() == expected.keys() and len(expected) >= 3
        assert all(scalars[record["step"]][key] == pytest.approx(value, rel=1e-6) for key, value in expected.items())
