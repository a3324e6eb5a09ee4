"""`afp lm-eval ARGS…` (lm-eval's own CLI with afp's tasks) and `afp tasks-path` (where those tasks are).

lm-eval 0.4.x has no entry point through which a package registers tasks: ``--include_path`` is the only way.
These two commands make afp's packaged task folder usable without a checkout.
"""

from __future__ import annotations

import sys
from importlib import metadata

import typer

from afp_cli.errors import AfpError

LM_EVAL_FLOOR = (0, 4, 12)  # TaskManager.task_index and fewshot_config sampler classes, which afp uses

LM_EVAL_HELP = """Run lm-eval's own command line with afp's task families added (--include_path), from any folder.

Every argument goes to lm-eval unchanged. Example:

    afp lm-eval --model hf --model_args pretrained=M,peft=runs/a --tasks afp_pawsx_zh --num_fewshot 5

Offline, with local data: add --metadata '{"data_dir": "/path/to/data"}'. See `lm-eval --help` for the rest.
"""

TASKS_PATH_HELP = """Print the folder of afp's lm-eval task families, for plain lm-eval:

    lm_eval --include_path "$(afp tasks-path)" --model hf --model_args pretrained=M --tasks afp_xnli_zh
"""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_lm_eval_version(installed: str | None = None) -> str:
    """The installed lm-eval version; one line naming the floor when it is older."""
    if installed is None:
        try:
            installed = metadata.version("lm_eval")
        except metadata.PackageNotFoundError:
            raise AfpError("lm-eval is not installed: pip install 'lm-eval>=0.4.12,<0.5'") from None
    if _version_tuple(installed) < LM_EVAL_FLOOR:
        floor = ".".join(map(str, LM_EVAL_FLOOR))
        raise AfpError(
            f"lm-eval {installed} is older than {floor}, which afp's tasks need: pip install 'lm-eval>={floor},<0.5'"
        )
    return installed


def lm_eval_arguments(arguments: list[str], tasks_folder: str) -> list[str]:
    """``arguments`` with ``--include_path tasks_folder`` added (lm-eval takes one include path, so a user's own
    is refused rather than silently replaced)."""
    if any(argument == "--include_path" or argument.startswith("--include_path=") for argument in arguments):
        raise AfpError(
            "afp lm-eval adds --include_path itself (afp's tasks); for other task folders run "
            "lm_eval directly (afp's folder: `afp tasks-path`)"
        )
    return [*arguments, "--include_path", tasks_folder]


def tasks_path() -> None:
    from afp_cli.evaluation.tasks import resolve_include_path

    typer.echo(str(resolve_include_path(None)))


def lm_eval(context: typer.Context) -> None:
    from afp_cli.evaluation.tasks import resolve_include_path

    check_lm_eval_version()
    arguments = lm_eval_arguments(list(context.args), str(resolve_include_path(None)))
    from lm_eval.__main__ import cli_evaluate

    # lm-eval parses sys.argv itself (and inserts its `run` sub-command when none is given)
    saved = sys.argv
    sys.argv = ["lm-eval", *arguments]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


LM_EVAL_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
