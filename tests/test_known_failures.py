"""Known failures inside libraries become one actionable line (exit 2); anything else keeps its traceback."""

from __future__ import annotations

import pytest

from afp_cli.known_failures import explain


def _hub_error(kind: str, message: str):
    import huggingface_hub.errors as hub_errors
    import requests

    response = requests.Response()
    response.status_code = 403 if kind == "GatedRepoError" else 404
    return getattr(hub_errors, kind)(message, response=response)


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as error:
            raise outer from error
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _hub_error(
                "GatedRepoError",
                "403 Client Error. Cannot access gated repo for url "
                "https://huggingface.co/meta-llama/Llama-2-7b-hf/resolve/main/config.json.",
            ),
            r"hub repository 'meta-llama/Llama-2-7b-hf' is gated: .*HF_TOKEN",
        ),
        (
            _wrapped(
                _hub_error(
                    "RepositoryNotFoundError",
                    "404 Client Error. Repository Not Found for url: "
                    "https://huggingface.co/facebook/xglm-565M/resolve/main/config.json.",
                ),
                OSError("facebook/xglm-565M is not a local folder and is not a valid model identifier"),
            ),
            r"hub repository 'facebook/xglm-565M' not found: check the name",
        ),
        (
            _wrapped(ModuleNotFoundError("No module named 'vllm'", name="vllm"), RuntimeError("backend failed")),
            r"optional package 'vllm' is not installed: pip install vllm",
        ),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), r"out of GPU memory: lower the batch size"),
    ],
)
def test_known_library_failures_get_one_actionable_line(error, expected):
    import re

    line = explain(error)
    assert line is not None and re.search(expected, line), line
    assert "\n" not in line


@pytest.mark.parametrize(
    "error",
    [
        ZeroDivisionError("division by zero"),
        KeyError("input_ids"),
        ModuleNotFoundError("No module named 'afp_cli.nothing'", name="afp_cli.nothing"),
    ],
)
def test_bugs_are_not_explained_away(error):
    assert explain(error) is None


def test_the_cli_turns_a_known_failure_into_exit_2_and_keeps_bugs_loud(tmp_path, run_cli, monkeypatch):
    import torch
    from helpers import GOOD_LINES, data_with, write_recipe

    import afp_cli.align.train

    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(afp_cli.align.train, "load_base_model", out_of_memory)
    code, _, err = run_cli("align", recipe)
    assert code == 2 and err.startswith("error: out of GPU memory") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(afp_cli.align.train, "load_base_model", bug)
    with pytest.raises(ZeroDivisionError):
        run_cli("align", recipe)
