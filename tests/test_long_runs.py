"""Long work that loses nothing and trusts no file: `afp evaluate --resume` after a kill, locks on run folders,
and reading what a pickle would run without running it.

In the style of tests/test_faults.py: each fault is made for real where a test can (a SIGTERM sent from outside at a
known progress line, a second process started on the same folder) and injected at one place otherwise (an error at
the k-th cell); every case asserts the exit code, the one line on stderr and what is on disk afterwards, and where a
run goes on, that it ends with the uninterrupted run's comparison, values and p-values.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import hc3_chinese, hc3_english, torchrun, write_jsonl

from afp_cli.pickle_check import pickle_globals, unsafe_globals
from afp_cli.run_lock import FolderInUse, folder_lock, lock_path


class _RunsCode:
    def __reduce__(self):
        return exec, ("raise SystemExit('ran')",)


# ------------------------------------------------------------------------------------------- pickles read, not run


def test_the_globals_of_every_protocol_are_read_without_loading(tmp_path):
    for protocol in (2, 4, 5):  # torch.save writes 2; pickle.dump's default (5) names globals with STACK_GLOBAL
        data = pickle.dumps({"state": [1, 2.0, "x"], "evil": _RunsCode(), "path": Path("a")}, protocol=protocol)
        assert pickle_globals(data) == ["builtins.exec", "pathlib.PosixPath"], protocol
        (tmp_path / f"p{protocol}.pkl").write_bytes(data)
        assert unsafe_globals(tmp_path / f"p{protocol}.pkl") == ["builtins.exec", "pathlib.PosixPath"]
        assert unsafe_globals(tmp_path / f"p{protocol}.pkl", engine=True) == ["builtins.exec"]


def test_torch_files_are_judged_as_weights_only_loading_would_judge_them(tmp_path):
    import numpy as np

    torch.save({"weights": torch.ones(2), "steps": [1, (2, 3)], "name": "adam"}, tmp_path / "plain.pt")
    torch.save({"numpy": np.random.RandomState(0).get_state()}, tmp_path / "numpy.pt")
    torch.save({"evil": _RunsCode()}, tmp_path / "evil.pt")
    (tmp_path / "shard.bin").write_bytes(b"\x00\x01raw tensor bytes")
    assert unsafe_globals(tmp_path / "plain.pt") == [] and unsafe_globals(tmp_path / "shard.bin") == []
    assert sorted(unsafe_globals(tmp_path / "numpy.pt")) != []  # weights_only refuses numpy arrays
    assert unsafe_globals(tmp_path / "numpy.pt", engine=True) == []  # accelerate's saved random state
    assert unsafe_globals(tmp_path / "evil.pt", engine=True) == ["builtins.exec"]


def test_a_pickle_that_computes_its_global_names_counts_as_unsafe():
    # STACK_GLOBAL whose module name is not a literal pushed just before: built at load time, so unreadable
    data = b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x85\x94R\x94\x8c\x04exec\x94\x93\x94."
    assert pickle_globals(data) == ["<a global the file builds at load time>"]


# ------------------------------------------------------------------------------------------- afp evaluate --resume

ROOT = Path(__file__).resolve().parents[1]
TASK = "afp_pawsx_zh"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer) -> tuple[Path, Path]:
    """A tiny random llama and a LoRA adapter on it with non-zero weights (so the two really differ)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from afp_cli.model.loading import quiet_saving
    from afp_cli.model.tiny import build_model, tiny_architecture

    root = tmp_path_factory.mktemp("long-runs")
    model = build_model(tiny_architecture("llama"), tiny_tokenizer, seed=0)
    model.config.max_position_embeddings = 2048
    with quiet_saving():
        model.save_pretrained(root / "base")
        tiny_tokenizer.save_pretrained(root / "base")
        peft_model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(root / "base"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
        )
        generator = torch.Generator().manual_seed(0)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.5
        peft_model.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data) -> Path:
    """PAWS-X zh test and en dev (the 1-shot demonstrations), copied so a test may change them."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "pawsx").mkdir()
    for name in ("zh_test.tsv", "en_dev.tsv"):
        shutil.copy(shared_data / "pawsx" / name, folder / "pawsx" / name)
    return folder


def evaluate_arguments(models, data_dir, out: Path, *extra: str) -> list[str]:
    """2 models x 2 shot counts x 2 seeds = 8 cells, 6 documents each."""
    base, adapter = models
    return [
        "evaluate",
        *("-m", str(base), "-a", str(adapter), "--tasks", TASK, "--num-fewshot", "0,1", "--seed", "0,1"),
        *("--data-dir", str(data_dir), "--limit", "6", "--device", "cpu", "-o", str(out), *extra),
    ]


def comparison(out: Path) -> dict:
    """What an interruption must not change: every row with its value, delta, interval and p-values."""
    saved = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    return {"rows": saved["rows"], "per_seed_rows": saved["per_seed_rows"]}


def last_line(err: str) -> str:
    """afp's one line; in-process runs also show the libraries' loading bars before it (subprocesses do not)."""
    assert "Traceback" not in err and err.strip(), err
    return err.strip().splitlines()[-1]


def cells_on_disk(out: Path) -> list[str]:
    """The complete cells (not one still being written under its temporary name)."""
    found = (path.parent.relative_to(out / "raw") for path in (out / "raw").rglob("cell.json"))
    return sorted(str(cell) for cell in found if not any(part.startswith(".tmp-") for part in cell.parts))


def sigterm_after_cells(arguments: list[str], run: Path, cells: int) -> str:
    """Run ``afp ARGUMENTS`` in a subprocess, send SIGTERM once ``cells`` cells are saved in ``run`` (a known
    point), and return its stderr; it must exit 143."""
    process = subprocess.Popen(
        [sys.executable, "-m", "afp_cli", *arguments],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 180
    while not ((run / "raw").is_dir() and len(cells_on_disk(run)) >= cells):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # what Slurm, Kubernetes and torchrun send before they kill
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    return err


@pytest.fixture(scope="module")
def uninterrupted(models, data_dir, tmp_path_factory) -> dict:
    """The comparison of the run every stopped and resumed run must end with."""
    import afp_cli.cli as cli

    out = tmp_path_factory.mktemp("uninterrupted") / "eval"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["afp", *evaluate_arguments(models, data_dir, out)])
        cli.main()  # returns on success (exit code 0)
    assert len(cells_on_disk(out)) == 8
    found = comparison(out)
    assert len(found["rows"]) == 4 and all(row["value"] is not None for row in found["rows"])
    assert [row["p_value"] is not None for row in found["rows"]] == [False, True, False, True]
    return found


def counting_runs(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Count lm-eval runs (one per cell); with ``fail_at``, the run of that cell (1-based) fails on a full disk."""
    import lm_eval

    from afp_cli.text_files import DiskFault

    real = lm_eval.simple_evaluate
    calls: list[int] = []

    def run(*args, **kwargs):
        calls.append(kwargs["num_fewshot"])
        if len(calls) == fail_at:
            raise DiskFault("could not write the results: no space left on device (0 B free there)")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", run)
    return calls


def test_evaluate_failing_at_the_third_cell_resumes_to_the_uninterrupted_comparison(
    models, data_dir, tmp_path, run_cli, monkeypatch, uninterrupted
):
    out = tmp_path / "eval"
    counting_runs(monkeypatch, fail_at=3)
    code, _, err = run_cli(*evaluate_arguments(models, data_dir, out))
    assert code == 2 and last_line(err).startswith("error: could not write the results"), err
    assert cells_on_disk(out) == ["base/0shot/seed0", "base/0shot/seed1"]  # the third is absent, not half there
    assert not (out / "comparison.json").exists() and not list(out.rglob(".tmp-*"))

    code, _, err = run_cli(*evaluate_arguments(models, data_dir, out))  # without --resume: refused, as before
    assert code == 2 and "holds a stopped run of afp evaluate: continue it with --resume" in last_line(err)

    monkeypatch.undo()
    calls = counting_runs(monkeypatch)
    code, _, err = run_cli(*evaluate_arguments(models, data_dir, out, "--resume"))
    assert code == 0, err
    assert len(calls) == 6  # only the missing cells ran
    assert comparison(out) == uninterrupted

    calls.clear()  # everything kept: no model runs, the comparison is rebuilt from the cells alone
    code, _, err = run_cli(*evaluate_arguments(models, data_dir, out, "--resume"))
    assert code == 0 and calls == [] and comparison(out) == uninterrupted, err


def test_evaluate_sigterm_from_outside_keeps_the_done_cells_and_resume_ends_as_if_never_stopped(
    models, data_dir, tmp_path, run_cli, uninterrupted
):
    out = tmp_path / "eval"
    err = sigterm_after_cells(evaluate_arguments(models, data_dir, out), out, 2)
    done = cells_on_disk(out)
    assert 2 <= len(done) < 8 and not list(out.rglob(".tmp-*"))
    message = re.fullmatch(
        r"stopped \(SIGTERM\) with (\d) of 8 cells done and kept in (.*) \((.*)\); continue with: (.*)", last_line(err)
    )
    assert message and int(message[1]) == len(done) and message[2] == str(out / "raw"), err
    assert message[3].count("seed") == len(done)  # each kept cell named
    assert message[4] == shlex.join(["afp", *evaluate_arguments(models, data_dir, out), "--resume"])

    code, _, err = run_cli(*shlex.split(message[4])[1:])  # the command it printed, as given
    assert code == 0, err
    assert comparison(out) == uninterrupted


def double_adapter_weights(folder: Path) -> None:
    """The same adapter files, other weights: what only a content hash tells apart."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "adapter_model.safetensors")
    save_file({name: value * 2 for name, value in weights.items()}, folder / "adapter_model.safetensors")


def assert_resume_refused(run_cli, arguments: list[str], out: Path, manifest: str, key: str) -> None:
    """``arguments --resume`` exits 2 with the one line naming ``key`` in ``out/manifest``, and changes nothing."""
    before = sorted(path.stat().st_mtime_ns for path in out.rglob("*"))
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 2, err
    assert re.fullmatch(
        rf"error: {re.escape(str(out / manifest))}: --resume continues a run with other arguments: {key}.*; rerun "
        r"with the run's arguments, or start it again with --overwrite",
        last_line(err),
    )
    assert sorted(path.stat().st_mtime_ns for path in out.rglob("*")) == before  # nothing changed


@pytest.mark.parametrize(
    "change, key",
    [
        (["--limit", "5"], r"limit was 6, now 5"),
        (["--seed", "0"], r"seeds was \[0, 1\], now \[0\]"),
        (["--demonstrations", "per-item"], r'demonstrations was "fixed", now "per-item"'),
        ("data", r'data_files.pawsx/zh_test.tsv was "[0-9a-f]{64}", now "[0-9a-f]{64}"'),
        ("adapter", r"adapters.adapter.adapter_model.safetensors was"),
    ],
)
def test_evaluate_resume_with_other_arguments_is_refused_naming_the_first_key_that_differs(
    models, data_dir, tmp_path, run_cli, monkeypatch, change, key
):
    base, adapter = models
    out = tmp_path / "eval"
    counting_runs(monkeypatch, fail_at=2)
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    moved = tmp_path / "adapter"
    shutil.copytree(adapter, moved)
    arguments = evaluate_arguments((base, moved), data, out)
    code, _, err = run_cli(*arguments)
    assert code == 2 and len(cells_on_disk(out)) == 1, err
    if change == "data":
        with (data / "pawsx" / "zh_test.tsv").open("a", encoding="utf-8") as file:
            file.write("99\tone more\trow\t1\n")
        change = []
    elif change == "adapter":
        double_adapter_weights(moved)
        change = []
    assert_resume_refused(run_cli, [*arguments, *change], out, "evaluate_run.json", key)


# ------------------------------------------------------------------------------------------- locks


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def plant_lock(folder: Path, host: str, pid: int) -> Path:
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2025-01-01T00:00:00+00:00", "command": "afp x"}))
    return path


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_goes_with_its_holder(tmp_path):
    folder = tmp_path / "runs" / "a"
    with folder_lock(folder) as path:
        assert path == tmp_path / "runs" / ".a.afp.lock" and not folder.exists()  # beside the folder, not in it
        held = json.loads(path.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(FolderInUse, match=rf"runs/a: in use by another afp process \(pid {os.getpid()} on "):
            with folder_lock(folder):
                pass
        assert path.is_file()  # the refused one took nothing away
    assert not path.exists() and not (tmp_path / "runs").exists()  # the folder it made for the lock too


def test_a_lock_whose_process_is_gone_is_taken_over_and_another_hosts_only_by_force(tmp_path, capsys):
    folder = tmp_path / "run"
    pid = dead_pid()
    plant_lock(folder, socket.gethostname(), pid)
    with folder_lock(folder):
        pass
    assert capsys.readouterr().err == (
        f"warning: {folder}: taking over the lock of pid {pid} on {socket.gethostname()}, since "
        "2025-01-01T00:00:00+00:00: afp x (its process is gone)\n"
    )
    path = plant_lock(folder, "another-host", pid)
    with pytest.raises(FolderInUse, match=r"pid \d+ on another-host.* or pass --force-unlock"):
        with folder_lock(folder):
            pass
    with folder_lock(folder, force_unlock=True):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "(by --force-unlock)" in capsys.readouterr().err


def test_evaluate_takes_over_a_stale_lock_and_refuses_a_live_one(models, data_dir, tmp_path, run_cli):
    out = tmp_path / "eval"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        plant_lock(out, socket.gethostname(), live.pid)
        code, _, err = run_cli(*evaluate_arguments(models, data_dir, out))
        assert code == 2 and re.fullmatch(
            rf"error: {out}: in use by another afp process \(pid {live.pid} on .*: afp x\); wait for it to end, .*",
            last_line(err),
        )
        assert not out.exists()
    finally:
        live.kill()
        live.wait()
    plant_lock(out, socket.gethostname(), live.pid)  # now gone
    code, _, err = run_cli(*evaluate_arguments(models, data_dir, out, "--num-fewshot", "0", "--seed", "0"))
    assert code == 0 and f"warning: {out}: taking over the lock of pid {live.pid}" in err, err
    assert not lock_path(out).exists()


# ------------------------------------------------------------------------------------------- #20 follow-ups


def test_on_main_gives_every_process_the_main_ones_error_of_its_own_class(monkeypatch):
    import torch.distributed as dist

    from afp_cli.align.distributed import AcceleratedProcesses
    from afp_cli.text_files import DiskFault

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        main = type("Main", (), {"is_main": True})()

        def full_disk():
            raise DiskFault("could not write x: no space left on device (0 B free there)")

        with pytest.raises(DiskFault, match="could not write x: no space left"):
            AcceleratedProcesses.on_main(main, full_disk)
        with pytest.raises(FolderInUse, match="in use"):
            AcceleratedProcesses.on_main(main, lambda: (_ for _ in ()).throw(FolderInUse("run: in use")))
    finally:
        dist.destroy_process_group()


def test_regenerated_task_configs_are_written_all_or_none(tmp_path, monkeypatch):
    import afp_cli.text_files as text_files
    from afp_cli.evaluation.taskgen import GENERATED_HEADER, write_family

    write_family(tmp_path, {"a.yaml": {"task": "a"}, "b.yaml": {"task": "b"}})
    before = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert set(before) == {"a.yaml", "b.yaml"} and before["a.yaml"].startswith(GENERATED_HEADER)
    real = text_files._put_in_place

    def full_disk_at_b(source, target):
        if target.name == "b.yaml":
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(text_files, "_put_in_place", full_disk_at_b)
    with pytest.raises(text_files.DiskFault, match=r"could not write the configs of .*: no space left on device"):
        write_family(tmp_path, {"a.yaml": {"task": "a2"}, "b.yaml": {"task": "b2"}})
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == before


def test_analyze_holds_its_folder_and_says_what_ctrl_c_kept(tmp_path, run_cli, monkeypatch, models):
    import afp_cli.analyze.loss_run as loss_run

    base, _ = models
    data = tmp_path / "held_out.jsonl"
    data.write_text('{"sent0": "a cat", "sent1": "一只猫"}\n', encoding="utf-8")
    out = tmp_path / "loss"
    arguments = ["analyze", "loss", "-m", str(base), "--data", str(data), "-o", str(out)]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        plant_lock(out, socket.gethostname(), live.pid)
        code, _, err = run_cli(*arguments)
        assert code == 2 and last_line(err).startswith(f"error: {out}: in use by another afp process (pid {live.pid}")
    finally:
        live.kill()
        live.wait()
    lock_path(out).unlink()

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(loss_run, "run_loss", interrupted)
    code, _, err = run_cli(*arguments)
    assert code == 130 and last_line(err) == (
        f"aborted (Ctrl-C): nothing was written to {out} (its report and generations are written whole, at the end); "
        "run the same command again"
    )
    assert not out.exists() and not lock_path(out).exists()


# ------------------------------------------------------------------------------------------- language-rate --resume

RATE_FILES = ("language_rate.json", "language_rate.md", "language_rate_generations.jsonl")


@pytest.fixture(scope="module")
def rate_questions(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rate-questions")
    demonstrations = [
        {"question": "Question?", "answer": "回答。", "question_lang": "en", "answer_lang": "zh"},
        {"question": "问题？", "answer": "Answer.", "question_lang": "zh", "answer_lang": "en"},
    ]
    return {
        "en": hc3_english(folder / "en.jsonl", 5),
        "zh": hc3_chinese(folder / "zh.jsonl", 5),
        "demos": write_jsonl(folder / "demos.jsonl", demonstrations),
    }


def rate_arguments(models, questions: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """2 models x 0 and 1 shot = 4 cells of answers (each: 2 directions x 4 questions, in batches of 2: several
    shares for several processes)."""
    base, adapter = models
    return [
        *("analyze", "language-rate", "-m", str(base), "-a", str(adapter), "--device", "cpu"),
        *("--questions", f"en={questions['en']}", "--questions", f"zh={questions['zh']}"),
        *("--demonstrations", str(questions["demos"]), "--sample", "4", "--max-gen-toks", "6", "--batch-size", "2"),
        *("-o", str(out), *extra),
    ]


def rate_report(out: Path) -> dict[str, str]:
    """What an interruption must not change: the report (rates, intervals, p-values, LCB columns) and the answers."""
    return {name: (out / name).read_text(encoding="utf-8") for name in RATE_FILES}


@pytest.fixture(scope="module")
def rate_uninterrupted(models, rate_questions, tmp_path_factory) -> dict[str, str]:
    import afp_cli.cli as cli

    out = tmp_path_factory.mktemp("rate-uninterrupted") / "rate"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["afp", *rate_arguments(models, rate_questions, out)])
        cli.main()
    assert cells_on_disk(out / "language_rate_run") == ["adapter/0shot", "adapter/1shot", "base/0shot", "base/1shot"]
    report = json.loads(rate_report(out)["language_rate.json"])
    assert [(row["model"], row["answers"]) for row in report["rows"]] == [("base", 4)] * 4 + [("adapter", 4)] * 4
    assert sum(row["p_value"] is not None for row in report["rows"]) == 4  # the adapter's paired tests
    return rate_report(out)


def test_language_rate_failing_at_the_third_cell_resumes_to_the_uninterrupted_report(
    models, rate_questions, tmp_path, run_cli, monkeypatch, rate_uninterrupted
):
    out = tmp_path / "rate"
    arguments = rate_arguments(models, rate_questions, out)
    counting_runs(monkeypatch, fail_at=3)
    code, _, err = run_cli(*arguments)
    assert code == 2 and last_line(err).startswith("error: could not write the results"), err
    assert cells_on_disk(out / "language_rate_run") == ["base/0shot", "base/1shot"]
    assert not any((out / name).exists() for name in RATE_FILES) and not list(out.rglob(".tmp-*"))

    code, _, err = run_cli(*arguments)  # without --resume: pointed to it
    assert code == 2 and last_line(err) == (
        f"error: {out / 'language_rate_run'}: holds a stopped run of afp analyze language-rate: continue it with "
        "--resume, or pass --overwrite to start again"
    )

    monkeypatch.undo()
    calls = counting_runs(monkeypatch)
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 0, err
    assert calls == [0, 1]  # only the adapter's two cells were generated
    assert rate_report(out) == rate_uninterrupted

    calls.clear()  # every cell kept: the report is rebuilt from them, no model runs
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 0 and calls == [] and rate_report(out) == rate_uninterrupted, err


def test_language_rate_failing_before_its_first_cell_leaves_nothing(
    models, rate_questions, tmp_path, run_cli, monkeypatch
):
    out = tmp_path / "rate"
    counting_runs(monkeypatch, fail_at=1)
    code, _, err = run_cli(*rate_arguments(models, rate_questions, out))
    assert code == 2 and "could not write the results" in last_line(err)
    assert not out.exists()  # the same command starts it again


def test_language_rate_sigterm_from_outside_keeps_the_done_cells_and_resume_ends_as_if_never_stopped(
    models, rate_questions, tmp_path, run_cli, rate_uninterrupted
):
    out = tmp_path / "rate"
    arguments = rate_arguments(models, rate_questions, out)
    raw = out / "language_rate_run" / "raw"
    err = sigterm_after_cells(arguments, out / "language_rate_run", 1)
    done = cells_on_disk(out / "language_rate_run")
    assert 1 <= len(done) < 4 and not list(out.rglob(".tmp-*")) and not (out / "language_rate.json").exists()
    message = re.fullmatch(
        r"stopped \(SIGTERM\) with (\d) of 4 cells of answers done and kept in (.*) \((.*)\); continue with: (.*)",
        last_line(err),
    )
    assert message and int(message[1]) == len(done) and message[2] == str(raw), err
    assert message[3].count("-shot seed 0") == len(done)
    assert message[4] == shlex.join(["afp", *arguments, "--resume"])

    code, _, err = run_cli(*shlex.split(message[4])[1:])
    assert code == 0, err
    assert rate_report(out) == rate_uninterrupted


@pytest.mark.parametrize(
    "change, key",
    [
        (["--sample", "3"], r"sample was 4, now 3"),
        (["--stop", "none"], r'stops was \["\\n"\], now \[\]'),
        ("questions", r'questions was \[\{"lang": "en", "sha256": "[0-9a-f]+'),
        ("adapter", r"adapters.adapter.adapter_model.safetensors was"),
    ],
)
def test_language_rate_resume_with_other_arguments_is_refused_naming_the_first_key_that_differs(
    models, rate_questions, tmp_path, run_cli, monkeypatch, change, key
):
    base, adapter = models
    questions = {name: Path(shutil.copy(path, tmp_path / path.name)) for name, path in rate_questions.items()}
    moved = Path(shutil.copytree(adapter, tmp_path / "adapter"))
    out = tmp_path / "rate"
    arguments = rate_arguments((base, moved), questions, out)
    counting_runs(monkeypatch, fail_at=2)
    code, _, err = run_cli(*arguments)
    assert code == 2 and cells_on_disk(out / "language_rate_run") == ["base/0shot"], err
    if change == "questions":
        with questions["en"].open("a", encoding="utf-8") as file:
            file.write(json.dumps({"question": "One more?", "human_answers": [], "chatgpt_answers": []}) + "\n")
        change = []
    elif change == "adapter":
        double_adapter_weights(moved)
        change = []
    assert_resume_refused(run_cli, [*arguments, *change], out, "language_rate_run/language_rate_run.json", key)


def test_language_rate_overwrite_starts_again_and_ctrl_c_after_the_answers_keeps_them(
    models, rate_questions, tmp_path, run_cli, monkeypatch, rate_uninterrupted
):
    import afp_cli.analyze.rate_run as rate_run

    out = tmp_path / "rate"
    arguments = rate_arguments(models, rate_questions, out)
    counting_runs(monkeypatch, fail_at=3)
    assert run_cli(*arguments)[0] == 2 and len(cells_on_disk(out / "language_rate_run")) == 2
    monkeypatch.undo()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the answers are scored

    calls = counting_runs(monkeypatch)
    monkeypatch.setattr(rate_run, "score", interrupted)
    code, _, err = run_cli(*arguments, "--overwrite")
    assert code == 130 and calls == [0, 1, 0, 1]  # --overwrite: every cell generated again, none of the old kept
    assert last_line(err) == (
        f"aborted (Ctrl-C) before the report was written: the answers are kept in {out / 'language_rate_run'}; "
        f"continue with: {shlex.join(['afp', *arguments, '--resume'])}"
    )
    assert not lock_path(out).exists() and not (out / "language_rate.json").exists()

    monkeypatch.undo()
    calls = counting_runs(monkeypatch)
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 0 and calls == [] and rate_report(out) == rate_uninterrupted, err

    (out / "language_rate_run" / "language_rate_run.json").unlink()  # a run folder afp cannot tell the run of
    code, _, err = run_cli(*arguments, "--resume")
    assert code == 2 and "language_rate_run: nothing to resume (no language_rate_run.json" in last_line(err)


@pytest.mark.slow
def test_language_rate_resumed_on_two_processes_writes_the_uninterrupted_report(
    models, rate_questions, tmp_path, run_cli, monkeypatch, rate_uninterrupted
):
    out = tmp_path / "rate"
    arguments = rate_arguments(models, rate_questions, out)
    counting_runs(monkeypatch, fail_at=3)
    assert run_cli(*arguments)[0] == 2 and cells_on_disk(out / "language_rate_run") == ["base/0shot", "base/1shot"]
    launched = torchrun("-m", "afp_cli", *arguments, "--resume", cwd=ROOT)  # the main process keeps, both generate
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert rate_report(out) == rate_uninterrupted
    run = json.loads((out / "language_rate_run" / "comparison.json").read_text(encoding="utf-8"))["run"]
    assert run["processes"] == 2 and min(run["requests_per_process"]) > 0
    assert sum(run["requests_per_process"]) == 2 * 2 * 4  # only the adapter's 2 cells: 2 directions x 4 questions
