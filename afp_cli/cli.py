"""The `afp` command line: wiring only. Each command lives in afp_cli/commands/<name>.py.

No torch import here or in the command modules at import time, so `afp --help` is instant.
"""

from __future__ import annotations

import sys
import warnings

import typer

from afp_cli import __version__
from afp_cli.errors import AfpError

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


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; bugs keep their traceback."""
    # transformers' deprecation notices about its own internals (raised inside save/load calls) say nothing a
    # user of afp can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    try:
        app(standalone_mode=False)
    except AfpError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as error:  # click's usage errors: print them like click does, exit 2
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
