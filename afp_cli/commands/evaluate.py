"""`afp evaluate --model M --adapter A --tasks T`: lm-eval on a base model and its adapters, one comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from afp_cli.errors import AfpError

HELP = """Evaluate a base model and each adapter on lm-eval tasks (afp's tasks/ and lm-eval's built-ins).

Example:

    afp evaluate --model facebook/xglm-564M --adapter runs/a --adapter runs/b \\
        --tasks afp_xnli,afp_pawsx_zh,xcopa_zh --num-fewshot 0,5 --output-dir eval/xglm

Offline, with local data in the ../shared/data layout (pawsx/zh_test.tsv, xcopa/zh_val.jsonl, ...):

    afp evaluate --model M --adapter runs/a --tasks afp_pawsx_zh --data-dir ../shared/data --limit 20

Writes OUTPUT_DIR/comparison.md and comparison.json (metric per task x model x shots, delta to the base,
stderr) and OUTPUT_DIR/raw/<model>/<k>shot/ (lm-eval's results.json and samples_<task>.jsonl).
"""


def _shot_counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AfpError(f"--num-fewshot: comma-separated integers expected, got '{text}'") from None


def evaluate(
    model: Annotated[str, typer.Option("--model", help="Base model: hub name or local folder.", show_default=False)],
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated lm-eval task or group names.",
                                       show_default=False)],
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="PEFT adapter folder trained on --model "
                                                         "(repeat for several).", show_default=False)] = None,
    num_fewshot: Annotated[str, typer.Option("--num-fewshot", help="Comma-separated shot counts, e.g. 0,5.")] = "0",
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the comparison and raw results go.")] = Path(
        "eval"),
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Local data folder for afp's task families "
                                                     "instead of the hub (see docs/evaluate.md).")] = None,
    include_path: Annotated[Optional[Path], typer.Option("--include-path", help="afp's task folder (default: the "
                                                         "repository's tasks/).")] = None,
    demo_lang: Annotated[Optional[str], typer.Option("--demo-lang", help="Draw demonstrations from this language "
                                                     "(runs each task's _demo_<lang> variant).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Documents per task (for quick checks).")] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", help="Batch size, or 'auto'.")] = "1",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16.")] = "auto",
    backend: Annotated[str, typer.Option("--backend", help="lm-eval model type: hf (shares base weights across "
                                         "adapters), vllm (LoRA via lora_local_path), ...")] = "hf",
    model_args: Annotated[str, typer.Option("--model-args", help="Extra lm-eval model arguments for non-hf "
                                            "backends, key=value,key=value.")] = "",
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling demonstrations and for torch/numpy; the "
                                      "same for every model.")] = 1234,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing comparison.")] = False,
) -> None:
    from afp_cli.evaluation.runner import EvaluateConfig, run_evaluation

    config = EvaluateConfig(
        model=model, tasks=[name.strip() for name in tasks.split(",") if name.strip()], adapters=list(adapter or []),
        num_fewshot=_shot_counts(num_fewshot), output_dir=str(output_dir),
        data_dir=None if data_dir is None else str(data_dir),
        include_path=None if include_path is None else str(include_path), demo_lang=demo_lang, limit=limit,
        batch_size=batch_size, device=device, dtype=dtype, backend=backend, model_args=model_args, seed=seed,
        overwrite=overwrite,
    )
    markdown, _ = run_evaluation(config)
    typer.echo(markdown.read_text(encoding="utf-8"))
    typer.echo(f"wrote {markdown} and {markdown.with_suffix('.json')}")
