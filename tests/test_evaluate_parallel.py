"""`afp evaluate` and `afp analyze language-rate` on 2 CPU processes (torchrun, gloo) against 1 process: the same
comparison, samples and paired tests; a process that fails ends every process, nothing written.

Each multi-process case starts ``torchrun --standalone --nproc-per-node 2`` as a subprocess: the product's command
(``-m afp_cli evaluate``) or, to make one process fail, this file run as a script (``fail-on-rank`` below).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script by torchrun

from helpers import LAUNCHERS, hc3_chinese, hc3_english, torchrun, write_jsonl  # noqa: E402

# two task families (multiple choice with 2 and 2 choices), 0 and 1 shot; 7 documents: uneven shares
TASKS = "afp_xcopa_zh_demo_native,afp_pawsx_zh"
LIMIT = "7"


def evaluate_arguments(base: Path, adapter: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        *("-m", str(base), "-a", str(adapter), "--tasks", TASKS, "--num-fewshot", "0,1"),
        *("--data-dir", str(data), "--limit", LIMIT, "--device", "cpu", "-o", str(out), *extra),
    ]


def comparison(out: Path) -> dict:
    return json.loads((out / "comparison.json").read_text(encoding="utf-8"))


def samples(out: Path) -> dict[str, list[dict]]:
    """Every samples file of the run, by its path under raw/."""
    return {
        str(path.relative_to(out)): [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for path in sorted((out / "raw").rglob("samples_*.jsonl"))
    }


def without_processes(payload: dict) -> dict:
    run = {key: value for key, value in payload["run"].items() if key not in ("processes", "requests_per_process")}
    return {**payload, "run": {**run, "output_dir": None}}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_write_the_comparison_and_samples_of_one(
    run_cli,
    base_and_adapter,
    shared_data,
    tmp_path,
    launcher,
):
    base, adapter = base_and_adapter
    code, _, stderr = run_cli(*evaluate_arguments(base, adapter, shared_data, tmp_path / "one"))
    assert code == 0, stderr
    launched = torchrun(
        "-m",
        "afp_cli",
        *evaluate_arguments(base, adapter, shared_data, tmp_path / "two"),
        cwd=tmp_path,
        launcher=launcher,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    one, two = comparison(tmp_path / "one"), comparison(tmp_path / "two")
    assert without_processes(two) == without_processes(one)  # values, deltas, intervals, p-values: all equal
    assert len(one["rows"]) >= 8 and any(row.get("p_value") is not None for row in one["rows"])
    assert samples(tmp_path / "two") == samples(tmp_path / "one")
    assert len(samples(tmp_path / "one")) == 8  # 2 models x 2 shots x 2 tasks
    # 2 models x 2 shots x 7 documents x (2 + 2 choices) = 112 loglikelihood requests
    assert one["run"]["processes"] == 1 and one["run"]["requests_per_process"] == [112]
    shares = two["run"]["requests_per_process"]
    assert two["run"]["processes"] == 2 and sum(shares) == 112 and min(shares) > 0
    assert launched.stdout.count("wrote ") == 1  # the main process reports, once


def test_units_go_to_the_least_loaded_process():
    from afp_cli.evaluation.parallel import assign

    units = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9]]
    # 4 -> process 0; 3 -> 1; 2 -> 1 (3 < 4); 1 -> 0 (4 < 5): 5 requests each
    assert assign(units, 2) == [[1, 3], [0, 2]]
    assert assign(units, 1) == [[0, 1, 2, 3]]
    assert assign([[0]], 3) == [[0], [], []]


@pytest.mark.slow
def test_a_process_that_fails_ends_every_process_with_its_line_and_writes_nothing(
    base_and_adapter,
    shared_data,
    tmp_path,
):
    base, adapter = base_and_adapter
    out = tmp_path / "out"
    launched = torchrun(
        __file__, "fail-on-rank", "1", *evaluate_arguments(base, adapter, shared_data, out), cwd=tmp_path
    )
    assert launched.returncode != 0
    # the main process: one line naming the failing process; that process: its own traceback (a bug's)
    assert "error: process 1 of the launch failed: RuntimeError: injected: out of memory" in launched.stderr
    assert "Traceback" in launched.stderr and "RuntimeError: injected: out of memory" in launched.stderr
    assert not out.exists() and not list(tmp_path.glob(".*lock*"))  # no manifest, no cell, no comparison, no lock


def _fail_on_rank(rank: int, arguments: list[str]) -> None:
    """``afp ARGUMENTS`` with every loglikelihood request of process ``rank`` raising, as an out-of-memory would."""
    from afp_cli.cli import main
    from afp_cli.evaluation.lean_scoring import LeanHFLM

    if int(os.environ["RANK"]) == rank:

        def out_of_memory(self, requests, disable_tqdm=False, override_bs=None):
            raise RuntimeError("injected: out of memory")

        LeanHFLM._loglikelihood_tokens = out_of_memory
    sys.argv = ["afp", *arguments]
    main()


if __name__ == "__main__":  # torchrun __file__ fail-on-rank RANK AFP-ARGUMENTS...
    _fail_on_rank(int(sys.argv[2]), sys.argv[3:])


@pytest.mark.slow
def test_language_rate_on_two_processes_writes_the_report_of_one(run_cli, tiny_model_dir, tmp_path):
    english, chinese = hc3_english(tmp_path / "all.jsonl", 6), hc3_chinese(tmp_path / "all_zh.jsonl", 5)
    demonstrations = write_jsonl(
        tmp_path / "demos.jsonl",
        [{"question": "Question?", "answer": "回答。", "question_lang": "en", "answer_lang": "zh"}]
        + [{"question": "问题？", "answer": "Answer.", "question_lang": "zh", "answer_lang": "en"}],
    )
    arguments = [
        *("analyze", "language-rate", "-m", str(tiny_model_dir("llama"))),
        *("--questions", f"en={english}", "--questions", f"zh={chinese}", "--demonstrations", str(demonstrations)),
        # 5 questions a direction in batches of 2: uneven shares, and a batch's left padding decides its answers
        *("--sample", "5", "--batch-size", "2", "--max-gen-toks", "6"),
    ]
    code, _, stderr = run_cli(*arguments, "-o", str(tmp_path / "one"))
    assert code == 0, stderr
    launched = torchrun("-m", "afp_cli", *arguments, "-o", str(tmp_path / "two"), cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("report: ") == 1  # the main process reports, once

    for name in ("language_rate.json", "language_rate_generations.jsonl"):
        one, two = ((tmp_path / run / name).read_text(encoding="utf-8") for run in ("one", "two"))
        assert two.replace(str(tmp_path / "two"), "OUT") == one.replace(str(tmp_path / "one"), "OUT"), name
    generations = (tmp_path / "one" / "language_rate_generations.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(generations) == 2 * 2 * 5  # 2 directions x 0 and 1 shot x 5 questions
    run = comparison(tmp_path / "two" / "language_rate_run")["run"]
    assert run["processes"] == 2 and sum(run["requests_per_process"]) == 20 and min(run["requests_per_process"]) > 0
