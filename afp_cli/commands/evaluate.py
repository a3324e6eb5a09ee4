"""`afp evaluate --model M --adapter A --tasks T`: lm-eval on a base model and its adapters, one comparison table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from afp_cli.commands.options import (
    ADAPTER_FLAGS,
    MODEL_FLAGS,
    OUTPUT_DIR_FLAGS,
    AllowOtherBase,
    Device,
    Dtype,
    ForceUnlock,
    MaxGenToks,
    Overwrite,
)
from afp_cli.commands.run_folder import say_stopped
from afp_cli.errors import AfpError
from afp_cli.evaluation.parallel import is_main_process

HELP = """Evaluate a base model and each adapter on lm-eval tasks (afp's tasks/ and lm-eval's built-ins).

Example:

    afp evaluate -m facebook/xglm-564M -a runs/a -a runs/b \\
        --tasks afp_xnli,afp_pawsx_zh,xcopa_zh --num-fewshot 0,5 --seed 0,1,2 -o eval/xglm

Offline, with local data in the ../shared/data layout (pawsx/zh_test.tsv, pawsx/en_dev.tsv, ...):

    afp evaluate -m M -a runs/a --tasks afp_pawsx_zh --data-dir ../shared/data --limit 20

k-shot runs put one fixed set of demonstrations, drawn with --seed as the official AFP evaluation draws it,
before every item (--demonstrations per-item: lm-eval's sampling). Without --num-fewshot each task runs with
its own shot count (afp_cls: one-shot). Writes OUTPUT_DIR/comparison.md and comparison.json (metric per task x
model x shots, delta to the base with a 95 % interval and the p-value of a paired test on the same documents:
exact McNemar for accuracy, a paired bootstrap for BLEU, chrF++, ROUGE; Holm-adjusted; stderr; mean and spread
over several seeds) and OUTPUT_DIR/raw/<model>/<k>shot/ (lm-eval's results.json and samples_<task>.jsonl; one
seed<N>/ folder per seed when there are several).

Each (model, shots, seed) cell is saved whole the moment it completes. SIGTERM (a scheduler's preemption) and
Ctrl-C stop at once, drop the cell being run, print the cells kept and exit 143 and 130: the same command with
--resume runs only the missing cells and ends with the comparison of an uninterrupted run (docs/long-runs.md).

Several processes (torchrun --nproc-per-node N -m afp_cli evaluate ..., or accelerate launch) split every cell's
requests and write the comparison one process writes (docs/evaluate.md, "Several GPUs").
"""


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AfpError(f"{option}: comma-separated integers expected, got '{text}'") from None


def evaluate(
    model: Annotated[str, typer.Option(*MODEL_FLAGS, help="Base model: hub name or local folder.", show_default=False)],
    tasks: Annotated[
        str, typer.Option("--tasks", help="Comma-separated lm-eval task or group names.", show_default=False)
    ],
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            *ADAPTER_FLAGS, help="PEFT adapter folder trained on --model (repeat for several).", show_default=False
        ),
    ] = None,
    num_fewshot: Annotated[
        str | None,
        typer.Option(
            "--num-fewshot",
            help="Comma-separated shot counts, e.g. 0,5 (default: each task's own, 0 where it sets none).",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[Path, typer.Option(*OUTPUT_DIR_FLAGS, help="Where the comparison and raw results go.")] = (
        Path("eval")
    ),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Local data folder for afp's task families instead of the hub (see docs/evaluate.md)."
        ),
    ] = None,
    include_path: Annotated[
        Path | None,
        typer.Option("--include-path", help="afp's task folder (default: the packaged one, see `afp tasks-path`)."),
    ] = None,
    demo_lang: Annotated[
        str | None,
        typer.Option(
            "--demo-lang",
            help="Demonstrations from this language: en "
            "(the default of afp's families), zh, or native (the test "
            "language); runs each task's _demo_<lang> variant.",
        ),
    ] = None,
    demonstrations: Annotated[
        str,
        typer.Option(
            "--demonstrations",
            help="fixed: one k-shot set per seed before every item, as the official evaluation; "
            "per-item: lm-eval's sampling, new demonstrations for each item.",
        ),
    ] = "fixed",
    limit: Annotated[int | None, typer.Option("--limit", help="Documents per task (for quick checks).")] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", help="Batch size, or 'auto'.")] = "1",
    device: Device = "auto",
    dtype: Dtype = "auto",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="lm-eval model type: hf (shares base weights across "
            "adapters), vllm (LoRA via lora_local_path; adapters with LoRA on the "
            "embeddings are merged first), ...",
        ),
    ] = "hf",
    model_args: Annotated[
        str,
        typer.Option("--model-args", help="Extra lm-eval model arguments for non-hf backends, key=value,key=value."),
    ] = "",
    seed: Annotated[
        str,
        typer.Option(
            "--seed",
            help="Seed of the demonstrations and of torch/numpy, the same for "
            "every model; 0 is the released official config's. Several (0,1,2): mean "
            "and spread per task.",
        ),
    ] = "0",
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Paired-bootstrap resamples for the delta's interval and p-value of metrics other "
            "than accuracy (BLEU, chrF++, ROUGE, ...); 0: no bootstrap (accuracy keeps its exact McNemar test).",
        ),
    ] = 1000,
    max_gen_toks: MaxGenToks = None,
    overwrite: Overwrite = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the stopped run in OUTPUT_DIR: keep its complete cells, run the rest (the arguments "
            "must be the run's; or start the run where none was started).",
        ),
    ] = False,
    force_unlock: ForceUnlock = False,
    allow_other_base: AllowOtherBase = False,
) -> None:
    from afp_cli.evaluation.runner import EvaluateConfig, EvaluationStopped, run_evaluation
    from afp_cli.run_lock import folder_lock

    config = EvaluateConfig(
        model=model,
        tasks=[name.strip() for name in tasks.split(",") if name.strip()],
        adapters=list(adapter or []),
        num_fewshot=None if num_fewshot is None else _integers(num_fewshot, "--num-fewshot"),
        output_dir=str(output_dir),
        data_dir=None if data_dir is None else str(data_dir),
        include_path=None if include_path is None else str(include_path),
        demo_lang=demo_lang,
        limit=limit,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        backend=backend,
        model_args=model_args,
        seed=_integers(seed, "--seed"),
        overwrite=overwrite,
        resume=resume,
        demonstrations=demonstrations,
        allow_other_base=allow_other_base,
        bootstrap=bootstrap,
        max_gen_toks=max_gen_toks,
    )
    main = is_main_process()  # torchrun / accelerate launch: the main process speaks and locks
    try:
        with folder_lock(output_dir, force_unlock) if main else contextlib.nullcontext():
            markdown, _ = run_evaluation(config)
    except EvaluationStopped as stop:
        say_stopped(stop, output_dir / "raw")
    if main:
        typer.echo(markdown.read_text(encoding="utf-8"))
        typer.echo(f"wrote {markdown} and {markdown.with_suffix('.json')}")
