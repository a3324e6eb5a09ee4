"""Run lm-eval on a base model and each of its adapters with the same seeds, and save raw results and samples.

With the ``hf`` backend the base weights are loaded once: the base model is scored with the adapters disabled,
then each adapter is switched on in turn (peft ``set_adapter``), and the loaded model goes to lm-eval's HFLM.
Other backends (``vllm``, ...) get lm-eval's own model arguments and load what they need themselves; an adapter
with LoRA on the input embeddings is merged into a copy of the base for vLLM, which cannot serve it.
Several seeds (``seed=[0, 1, 2]``) run every task once per seed; the comparison shows their mean and spread.
Every adapter row gets a paired test against the base on the same documents (significance.py), from the
per-document results lm-eval returns with its samples.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError
from afp_cli.evaluation import tasks as task_lookup
from afp_cli.evaluation.comparison import add_deltas, over_seeds, result_rows, shots_run, write_comparison
from afp_cli.evaluation.significance import PairedTests, collect_items
from afp_cli.model.variants import model_labels
from afp_cli.progress import progress_bar
from afp_cli.report import refuse_existing, write_json
from afp_cli.statistics import DEFAULT_RESAMPLES
from afp_cli.text_files import write_atomically


@dataclass
class EvaluateConfig:
    model: str  # base model: hub name or local folder
    tasks: list[str]  # lm-eval task or group names, afp's and built-ins
    adapters: list[str] = field(default_factory=list)  # PEFT adapter folders trained on `model`
    num_fewshot: list[int] | None = None  # None: each task's own num_fewshot (0 where it sets none)
    output_dir: str = "eval"
    data_dir: str | None = None  # local data instead of the hub for afp's task families
    include_path: str | None = None  # afp's tasks/ folder (default: the one next to the package)
    demo_lang: str | None = None  # run the `<task>_demo_<lang>` variants (en, zh, native)
    limit: int | None = None  # documents per task (lm-eval --limit)
    batch_size: str = "1"  # an integer or lm-eval's "auto"
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "hf"  # any lm-eval model type; hf shares the base weights across adapters
    model_args: str = ""  # extra lm-eval model arguments, "key=value,key=value"
    seed: int | list[int] = 0  # 0 = the released official config's seed; several: mean and spread per task
    overwrite: bool = False
    demonstrations: str = "fixed"  # fixed: one k-shot set per seed (official); per-item: lm-eval's sampling
    allow_other_base: bool = False  # load adapters on a base other than the one they were trained on
    bootstrap: int = DEFAULT_RESAMPLES  # paired-bootstrap resamples for non-accuracy metrics; 0: no bootstrap
    max_gen_toks: int | None = None  # generation tasks: at most this many new tokens (None: each task's own)

    def __post_init__(self) -> None:
        from afp_cli.evaluation.run_tasks import DEMONSTRATION_MODES

        if not self.tasks:
            raise AfpError("--tasks: give at least one task or group name")
        if self.num_fewshot is not None and (not self.num_fewshot or any(shots < 0 for shots in self.num_fewshot)):
            raise AfpError(f"--num-fewshot: non-negative integers expected, got {self.num_fewshot}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise AfpError(f"--seed: one or more different integers expected, got {self.seed}")
        if self.limit is not None and self.limit <= 0:
            raise AfpError(f"--limit: a positive number of documents expected, got {self.limit}")
        if self.batch_size != "auto" and not (self.batch_size.isdigit() and int(self.batch_size) > 0):
            raise AfpError(f"--batch-size: a positive integer or 'auto' expected, got '{self.batch_size}'")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise AfpError(f"{self.data_dir}: --data-dir is not a folder")
        if self.max_gen_toks is not None and self.max_gen_toks < 1:
            raise AfpError(f"--max-gen-toks: a positive number of tokens expected, got {self.max_gen_toks}")
        if self.bootstrap < 0:
            raise AfpError(f"--bootstrap: a number of resamples (0 or more) expected, got {self.bootstrap}")
        if self.demonstrations not in DEMONSTRATION_MODES:
            raise AfpError(
                f"--demonstrations: one of {', '.join(DEMONSTRATION_MODES)} expected, got '{self.demonstrations}'"
            )

    @property
    def seeds(self) -> list[int]:
        return list(self.seed) if isinstance(self.seed, (list, tuple)) else [self.seed]


def _check_adapters(config: EvaluateConfig) -> None:
    from afp_cli.model.adapter_base import check_adapter_base

    for adapter in config.adapters:
        if not Path(adapter).is_dir():
            raise AfpError(f"{adapter}: adapter folder not found")
        check_adapter_base(adapter, config.model, config.allow_other_base)


def _hf_models(config: EvaluateConfig) -> Iterator[tuple[str, Any]]:
    """Yield (label, lm-eval LM) for the base model and each adapter, the base weights loaded once: one HFLM around
    the model, with the variant's adapter switched on (afp_cli/model/variants.py, shared with afp analyze)."""
    from lm_eval.models.huggingface import HFLM

    from afp_cli.model.variants import load_variants

    loaded = load_variants(config.model, config.adapters, config.device, config.dtype, check_bases=False)
    batch_size = config.batch_size if config.batch_size == "auto" else int(config.batch_size)
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    for label, _ in loaded.variants():
        yield label, lm


def served_adapters(config: EvaluateConfig, notify=None) -> list[tuple[str, str, str | None]]:
    """(label, model to load, adapter to apply) per adapter for a non-hf backend. vLLM cannot serve LoRA on the
    input embeddings for most architectures (see merged_adapters.py): such an adapter is merged into a copy of the
    base under OUTPUT_DIR/merged/<label> and served as a plain model."""
    from afp_cli.errors import warn
    from afp_cli.evaluation.merged_adapters import merge_into_base, targets_embeddings

    notify = notify or warn
    served = []
    for label, adapter in zip(model_labels(config.adapters)[1:], config.adapters):
        if config.backend == "vllm" and targets_embeddings(adapter):
            merged = merge_into_base(config.model, adapter, Path(config.output_dir) / "merged" / label)
            notify(
                f"{adapter}: LoRA on the input embeddings, which vLLM does not serve as an adapter: merged into a "
                f"copy of the base at {merged} and served as a plain model"
            )
            served.append((label, str(merged), None))
        else:
            served.append((label, config.model, adapter))
    return served


def _backend_models(config: EvaluateConfig) -> Iterator[tuple[str, Any]]:
    """Other lm-eval backends: the model-args string lm-eval itself parses (vLLM: its LoRA support)."""
    from lm_eval.api.registry import get_model

    extra = f",{config.model_args}" if config.model_args else ""
    device = f",device={config.device}" if config.device != "auto" else ""

    def arguments(model: str) -> str:
        return f"pretrained={model},batch_size={config.batch_size}{extra}{device}"

    model_class = get_model(config.backend)
    yield model_labels(config.adapters)[0], model_class.create_from_arg_string(arguments(config.model))
    for label, model, adapter in served_adapters(config):
        adapter_args = (
            ""
            if adapter is None
            else (f",lora_local_path={adapter}" if config.backend == "vllm" else f",peft={adapter}")
        )
        yield label, model_class.create_from_arg_string(arguments(model) + adapter_args)


def _save_raw(folder: Path, results: dict[str, Any]) -> None:
    from lm_eval.utils import handle_non_serializable

    samples = results.pop("samples", {}) or {}
    write_json(folder / "results.json", json.loads(json.dumps(results, default=handle_non_serializable)))
    for task, records in samples.items():
        lines = (json.dumps(record, default=handle_non_serializable, ensure_ascii=False) for record in records)
        write_atomically(folder / f"samples_{task}.jsonl", "\n".join(lines) + "\n")


@contextlib.contextmanager
def _without_lm_eval_bars() -> Iterator[None]:
    """Switch off the tqdm bar lm-eval's HF model draws for every request type (its ``disable`` is hard-wired to
    False, so TQDM_DISABLE cannot): afp's own progress line is the one progress display."""
    import lm_eval.models.huggingface as huggingface

    original = huggingface.tqdm

    def silent(*args, **kwargs):
        kwargs["disable"] = True
        return original(*args, **kwargs)

    huggingface.tqdm = silent
    try:
        yield
    finally:
        huggingface.tqdm = original


def _progress():
    from rich.console import Console

    return progress_bar(Console(), transient=False)  # a log or a pipe gets the results, not progress frames


def _shots_folder(requested: int | None, results: dict[str, Any]) -> str:
    """``<k>shot``: the requested k, or with each task's own k the one they share (``mixedshot`` if they differ)."""
    if requested is not None:
        return f"{requested}shot"
    ran = set(results.get("n-shot", {}).values())
    return f"{ran.pop()}shot" if len(ran) == 1 else "mixedshot"


def run_evaluation(config: EvaluateConfig) -> tuple[Path, Path]:
    """Evaluate the base model and every adapter on every task, shot count and seed; returns the comparison files.

    Raw lm-eval output goes to OUTPUT_DIR/raw/<model>/<k>shot/ (one seed) or .../<k>shot/seed<N>/ (several).
    """
    import lm_eval

    from afp_cli.evaluation.run_tasks import Aggregations, ContextLimits, per_item_demonstrations

    include_path = task_lookup.resolve_include_path(config.include_path)
    manager = task_lookup.build_task_manager(include_path, config.tasks, config.data_dir)
    task_lookup.check_task_names(manager, config.tasks)
    names = task_lookup.with_demo_language(manager, config.tasks, config.demo_lang)
    task_lookup.check_local_data(manager, names, config.data_dir, config.num_fewshot)
    _check_adapters(config)
    output_dir = Path(config.output_dir)
    refuse_existing([output_dir / "comparison.md", output_dir / "comparison.json"], config.overwrite)

    models = _hf_models(config) if config.backend == "hf" else _backend_models(config)
    shot_counts: list[int | None] = list(config.num_fewshot) if config.num_fewshot is not None else [None]
    seeds = config.seeds
    rows: list[dict[str, Any]] = []
    items: dict[tuple[str, int], dict] = {}  # (model, seed) -> per-document values (significance.collect_items)
    aggregations = Aggregations()
    with _progress() as progress, _without_lm_eval_bars():
        job = progress.add_task("evaluating", total=(1 + len(config.adapters)) * len(shot_counts) * len(seeds))
        for label, lm in models:
            manager.hooks = [ContextLimits(lm, config.limit, max_gen_toks=config.max_gen_toks), aggregations]
            if config.demonstrations == "per-item":
                manager.hooks.append(per_item_demonstrations)
            for shots in shot_counts:
                for seed in seeds:
                    shown = "task's own shots" if shots is None else f"{shots}-shot"
                    progress.update(job, description=f"{label}, {shown}, seed {seed}")
                    results = lm_eval.simple_evaluate(
                        model=lm,
                        tasks=names,
                        num_fewshot=shots,
                        limit=config.limit,
                        task_manager=manager,
                        log_samples=True,
                        random_seed=seed,
                        numpy_random_seed=seed,
                        torch_random_seed=seed,
                        fewshot_random_seed=seed,
                    )
                    if results is None:  # lm-eval returns None on non-zero ranks of a distributed run
                        continue
                    rows.extend(result_rows(label, shots, results, seed))
                    # the lambda runs inside collect_items, within this iteration
                    items.setdefault((label, seed), {}).update(
                        collect_items(results, lambda task: shots_run(task, results, shots))  # noqa: B023
                    )
                    folder = output_dir / "raw" / label / _shots_folder(shots, results)
                    _save_raw(folder / f"seed{seed}" if len(seeds) > 1 else folder, results)
                    progress.advance(job)
    run = {**asdict(config), "tasks_run": names, "models": model_labels(config.adapters)}
    values = {(row["task"], row["shots"], row["metric"], row["model"], row["seed"]): row["value"] for row in rows}
    tests = PairedTests(items, aggregations.by_task, values, resamples=config.bootstrap, seed=seeds[0])
    per_seed = tests.annotate(add_deltas(rows, by_seed=True), per_seed=True) if len(seeds) > 1 else None
    return write_comparison(output_dir, tests.annotate(add_deltas(over_seeds(rows))), run, per_seed)
