"""The `afp` command line: wiring only. Each command lives in afp_cli/commands/<name>.py.

No torch import here or in the command modules at import time, so `afp --help` is instant.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from afp_cli import __version__
from afp_cli.errors import EXIT_USER_ERROR, AfpError

app = typer.Typer(
    name="afp",
    help="Align after Pre-train: cross-lingual alignment of multilingual causal LMs (MCL + CIT), "
    "evaluation on the paper's benchmarks, and analysis of language rate and representation alignment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from afp_cli.commands import align

    app.command("align", help=align.HELP, no_args_is_help=True)(align.align)
    # sub-commands: one line each, added below as the command modules land
    from afp_cli.commands import data

    app.add_typer(data.app, name="data")
    from afp_cli.commands import evaluate

    app.command("evaluate", help=evaluate.HELP, no_args_is_help=True)(evaluate.evaluate)
    from afp_cli.commands import analyze

    app.add_typer(analyze.app, name="analyze")
    from afp_cli.commands import lm_eval

    app.command("lm-eval", help=lm_eval.LM_EVAL_HELP, context_settings=lm_eval.LM_EVAL_SETTINGS)(lm_eval.lm_eval)
    app.command("tasks-path", help=lm_eval.TASKS_PATH_HELP)(lm_eval.tasks_path)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"afp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """afp: Align after Pre-train."""


_register_commands()


def _usage_error_types() -> tuple[type, ...]:
    """Click's usage-error class from the `click` package and from the copy typer >= 0.29 bundles as
    ``typer._click``: which one raises depends on the installed typer, so both are recognised."""
    found: list[type] = []
    for module_name in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(__import__(module_name, fromlist=["ClickException"]).ClickException)
        except ImportError:
            continue
    return tuple(found)


def quiet_libraries() -> None:
    """Keep library chatter off the user's terminal: afp's own progress line is the one progress display.

    transformers' and datasets' progress bars ("Loading weights: 0%|…") and their deprecation notices about their
    own internals say nothing a user of afp can act on; errors still surface as exceptions.
    """
    import logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch|datasets)\.")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's request bars, datasets' map bars: plain tqdm
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its fork warning is noise in a CLI
    for name in ("transformers", "datasets", "huggingface_hub", "peft", "accelerate", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; bugs keep their traceback."""
    quiet_libraries()
    try:
        code = app(standalone_mode=False, prog_name="afp")
    except AfpError as error:
        _fail(str(error), error.exit_code)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except _usage_error_types() as error:  # an unknown option, a value of the wrong type: click's usage line, exit 2
        error.show()
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:
        from afp_cli.known_failures import explain

        line = explain(error)
        if line is None:
            raise  # a bug in afp or a library: keep the traceback
        _fail(line, EXIT_USER_ERROR)
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, exit_code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)  # one line, whatever the message held
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
