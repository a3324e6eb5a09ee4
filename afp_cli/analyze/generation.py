"""Questions in, answers out, through lm-eval: write each direction's questions and demonstrations for the
``afp_langrate_{src}-{tgt}`` task family, run it with `afp evaluate`'s runner on the base model and every adapter,
and read the samples files back.

One code path generates for `afp evaluate` and `afp analyze language-rate` alike: lm-eval batches the prompts
(HF backend: the base weights are loaded once, adapters switched in turn) and any lm-eval backend (vLLM, ...)
works. The prompt, the fixed demonstrations, greedy decoding and ``max_gen_toks`` live in tasks/afp_langrate/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from afp_cli.analyze.language_rate import Generation, read_generations
from afp_cli.analyze.questions import DirectionInputs
from afp_cli.errors import AfpError
from afp_cli.text_files import write_atomically

TASK_FAMILY = "afp_langrate"
DATA_FOLDER = "langrate"  # tasks/afp_langrate/*.yaml read {data_dir}/langrate/{src}-{tgt}/{test,demos}.jsonl


@dataclass(frozen=True)
class GenerationConfig:
    model: str
    adapters: tuple[str, ...] = ()
    shots: tuple[int, ...] = (0, 1)
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "hf"  # any lm-eval model type
    model_args: str = ""  # extra lm-eval model arguments for other backends
    seed: int = 0
    allow_other_base: bool = False  # load adapters on a base other than the one they were trained on
    max_gen_toks: int | None = None  # at most this many new tokens per answer (None: the task's 128)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise AfpError(f"--batch-size must be at least 1, got {self.batch_size}")


def check_backend(name: str) -> None:
    """An lm-eval model type that does not exist is a user error, said before anything is written or loaded."""
    from lm_eval.api.registry import get_model

    try:
        get_model(name)
    except ValueError:
        raise AfpError(
            f"--backend: lm-eval has no model type '{name}' (hf, vllm, ...: see lm-eval's model list)"
        ) from None


def task_name(source: str, target: str) -> str:
    return f"{TASK_FAMILY}_{source}-{target}"


def write_task_data(data_dir: Path, inputs: Sequence[DirectionInputs]) -> None:
    """``test.jsonl`` (the questions asked) and ``demos.jsonl`` (the demonstration pool in file order: the task
    draws its fixed set from it with the run's seed, the same draw as ``DirectionInputs.demonstrations``)."""
    for direction in inputs:
        folder = data_dir / DATA_FOLDER / f"{direction.source}-{direction.target}"
        tests = [{"id": question.id, "question": question.question, "answer": ""} for question in direction.questions]
        # A task's demonstration split must have a row; a 0-shot run without a pool never reads this one.
        demos = [{"question": item.question, "answer": item.answer} for item in direction.pool] or [
            {"question": "", "answer": ""}
        ]
        for name, rows in (("test", tests), ("demos", demos)):
            write_atomically(
                folder / f"{name}.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            )


def generate(
    config: GenerationConfig, inputs: Sequence[DirectionInputs], run_dir: Path, resume: bool = False
) -> list[Generation]:
    """Run the family on the base model and each adapter at every shot count; answers as read from the samples.
    ``resume``: keep the complete cells of the run in ``run_dir`` (evaluate's --resume), generate the others."""
    from afp_cli.evaluation.runner import EvaluateConfig, run_evaluation

    data_dir = run_dir / "data"
    write_task_data(data_dir, inputs)
    tasks = [task_name(direction.source, direction.target) for direction in inputs]
    run_evaluation(
        EvaluateConfig(
            model=config.model,
            tasks=tasks,
            adapters=list(config.adapters),
            num_fewshot=list(config.shots),
            output_dir=str(run_dir),
            data_dir=str(data_dir),
            batch_size=str(config.batch_size),
            device=config.device,
            dtype=config.dtype,
            backend=config.backend,
            model_args=config.model_args,
            seed=config.seed,
            allow_other_base=config.allow_other_base,
            max_gen_toks=config.max_gen_toks,
            resume=resume,
        )
    )
    # The runner lists the model labels it wrote raw/<label>/ folders for: base first, then each adapter.
    models = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))["run"]["models"]
    return [
        generation
        for label in models
        for task in tasks
        for shots in config.shots
        for generation in read_generations(run_dir / "raw" / label / f"{shots}shot" / f"samples_{task}.jsonl")
    ]
