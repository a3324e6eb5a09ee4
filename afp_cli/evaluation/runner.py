"""Run lm-eval on a base model and each of its adapters with the same seeds, and save raw results and samples.

With the ``hf`` backend the base weights are loaded once: the base model is scored with the adapters disabled,
then each adapter is switched on in turn (peft ``set_adapter``), and the loaded model goes to lm-eval's HFLM, as
afp's LeanHFLM (lean_scoring.py: the same loglikelihoods, the LM head only where one is read and shared prefixes
encoded once).
Other backends (``vllm``, ...) get lm-eval's own model arguments and load what they need themselves; an adapter
with LoRA on the input embeddings is merged into a copy of the base for vLLM, which cannot serve it.
Several seeds (``seed=[0, 1, 2]``) run every task once per seed; the comparison shows their mean and spread.
Every adapter row gets a paired test against the base on the same documents (significance.py), from the
per-document results lm-eval returns with its samples.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError, warn
from afp_cli.evaluation import cells
from afp_cli.evaluation import tasks as task_lookup
from afp_cli.evaluation.comparison import add_deltas, over_seeds, result_rows, shots_run, write_comparison
from afp_cli.evaluation.parallel import Processes, split_scoring, start_processes, stop_processes
from afp_cli.evaluation.significance import PairedTests, collect_items
from afp_cli.model.variants import model_labels
from afp_cli.progress import progress_bar
from afp_cli.report import refuse_existing
from afp_cli.statistics import DEFAULT_RESAMPLES


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
    resume: bool = False  # keep the complete cells of the run in output_dir, run the rest (cells.py)
    demonstrations: str = "fixed"  # fixed: one k-shot set per seed (official); per-item: lm-eval's sampling
    allow_other_base: bool = False  # load adapters on a base other than the one they were trained on
    bootstrap: int = DEFAULT_RESAMPLES  # paired-bootstrap resamples for non-accuracy metrics; 0: no bootstrap
    max_gen_toks: int | None = None  # generation tasks: at most this many new tokens (None: each task's own)

    def __post_init__(self) -> None:
        from afp_cli.evaluation.run_tasks import DEMONSTRATION_MODES

        if not self.tasks:
            raise AfpError("--tasks: give at least one task or group name")
        if self.resume and self.overwrite:
            raise AfpError("--resume and --overwrite contradict each other: choose one")
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
    from afp_cli.evaluation.lean_scoring import LeanHFLM
    from afp_cli.model.variants import load_variants

    loaded = load_variants(config.model, config.adapters, config.device, config.dtype, check_bases=False)
    batch_size = config.batch_size if config.batch_size == "auto" else int(config.batch_size)
    lm = LeanHFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
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


def _backend_models(config: EvaluateConfig, finished: set[str] = frozenset()) -> Iterator[tuple[str, Any]]:
    """Other lm-eval backends: the model-args string lm-eval itself parses (vLLM: its LoRA support). A model in
    ``finished`` (every cell of it kept by --resume) is not loaded: it comes as (label, None)."""
    from lm_eval.api.registry import get_model

    extra = f",{config.model_args}" if config.model_args else ""
    device = f",device={config.device}" if config.device != "auto" else ""

    def arguments(model: str) -> str:
        return f"pretrained={model},batch_size={config.batch_size}{extra}{device}"

    def create(label: str, model_args: str) -> tuple[str, Any]:
        return label, None if label in finished else model_class.create_from_arg_string(model_args)

    model_class = get_model(config.backend)
    yield create(model_labels(config.adapters)[0], arguments(config.model))
    for label, model, adapter in served_adapters(config):
        adapter_args = (
            ""
            if adapter is None
            else (f",lora_local_path={adapter}" if config.backend == "vllm" else f",peft={adapter}")
        )
        yield create(label, arguments(model) + adapter_args)


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


def _progress(shown: bool = True):
    from rich.console import Console

    # one progress line for a launch of several processes: the main one's
    return progress_bar(
        Console(quiet=not shown), transient=False
    )  # a log or a pipe gets the results, not progress frames


def _shots_folder(requested: int | None, results: dict[str, Any]) -> str:
    """``<k>shot``: the requested k, or with each task's own k the one they share (``mixedshot`` if they differ)."""
    if requested is not None:
        return f"{requested}shot"
    ran = set(results.get("n-shot", {}).values())
    return f"{ran.pop()}shot" if len(ran) == 1 else "mixedshot"


class EvaluationStopped(Exception):
    """SIGTERM or Ctrl-C stopped the run: the cell being run is dropped, the complete ones are kept for --resume."""

    def __init__(self, signal_name: str, done: list[cells.CellKey], total: int):
        super().__init__(f"stopped by {signal_name}")
        self.signal_name, self.done, self.total = signal_name, done, total
        self.exit_code = 128 + signal.Signals[signal_name]


class _Signalled(BaseException):
    """Raised by the signal handler wherever the run is (inside lm-eval too, which catches Exception)."""


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) stop the run at once: a cell can take an hour, longer
    than a scheduler waits between SIGTERM and SIGKILL, and a cell is written whole or not at all, so the one
    being run is simply dropped."""

    def stop(signum, frame):
        raise _Signalled(signal.Signals(signum).name)

    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[number] = signal.signal(number, stop)
        except ValueError:  # not the main thread: keep the default handling
            break
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_manifest(config: EvaluateConfig, names: list[str], manager, include_path: Path) -> dict[str, Any]:
    """What decides the numbers of every cell of this run (cells.py); --resume must find the same."""
    from importlib.metadata import version

    return {
        "format": cells.MANIFEST_FORMAT,
        "model": cells.model_identity(config.model),
        "adapters": {
            label: cells.adapter_identity(adapter)
            for label, adapter in zip(model_labels(config.adapters)[1:], config.adapters)
        },
        "tasks": names,
        "task_definitions": cells.folder_digest(include_path),
        "data_files": cells.local_data_files(manager, names, config.data_dir, config.num_fewshot),
        "num_fewshot": config.num_fewshot,
        "seeds": config.seeds,
        "limit": config.limit,
        "demonstrations": config.demonstrations,
        "max_gen_toks": config.max_gen_toks,
        "bootstrap": config.bootstrap,
        "backend": config.backend,
        "model_args": config.model_args,
        "batch_size": config.batch_size,
        "device": config.device,
        "dtype": config.dtype,
        "lm_eval": version("lm_eval"),
    }


def _claim(output_dir: Path, manifest: dict[str, Any], config: EvaluateConfig) -> str:
    """Start or continue the run in ``output_dir``; returns the id its cells carry.

    ``--resume`` continues the run started there with the same arguments (where none was started, it starts one,
    so a scheduler can requeue one command); without it, an unfinished run or a finished comparison is replaced
    only with ``--overwrite``.
    """
    saved = cells.read_manifest(output_dir)
    if config.resume and saved is not None:
        cells.check_same_run(output_dir / cells.MANIFEST, saved, manifest)
        return str(saved["run_id"])
    if config.resume and output_dir.is_dir() and any(output_dir.iterdir()):
        raise AfpError(f"{output_dir}: nothing to resume (no {cells.MANIFEST}: no afp evaluate run was started there)")
    refuse_existing([output_dir / "comparison.md", output_dir / "comparison.json"], config.overwrite)
    if saved is not None and not config.overwrite:
        raise AfpError(
            f"{output_dir}: holds a stopped run of afp evaluate: continue it with --resume, or pass --overwrite to "
            "start again"
        )
    run_id = uuid.uuid4().hex
    cells.write_manifest(output_dir, manifest, run_id)
    return run_id


def run_evaluation(config: EvaluateConfig) -> tuple[Path, Path]:
    """Evaluate the base model and every adapter on every task, shot count and seed; returns the comparison files.

    Raw lm-eval output goes to OUTPUT_DIR/raw/<model>/<k>shot/ (one seed) or .../<k>shot/seed<N>/ (several), one
    folder per cell written whole; with ``resume`` the complete cells of the run are kept and the rest run. The
    comparison is built from those folders (cells.py). SIGTERM and Ctrl-C raise EvaluationStopped.
    """
    from afp_cli.evaluation.run_tasks import Aggregations

    include_path = task_lookup.resolve_include_path(config.include_path)
    manager = task_lookup.build_task_manager(include_path, config.tasks, config.data_dir)
    task_lookup.check_task_names(manager, config.tasks)
    names = task_lookup.with_demo_language(manager, config.tasks, config.demo_lang)
    task_lookup.check_local_data(manager, names, config.data_dir, config.num_fewshot)
    _check_adapters(config)
    output_dir = Path(config.output_dir)
    shot_counts: list[int | None] = list(config.num_fewshot) if config.num_fewshot is not None else [None]
    planned = [
        cells.CellKey(label, shots, seed)
        for label in model_labels(config.adapters)
        for shots in shot_counts
        for seed in config.seeds
    ]
    aggregations = Aggregations()
    run_id: str | None = None
    missing = _missing_folders(output_dir)
    processes = start_processes(config.device, config.backend)
    with _stopping_on_signals():
        try:
            manifest = run_manifest(config, names, manager, include_path)

            def claim() -> tuple[str, dict[cells.CellKey, Path]]:
                claimed = _claim(output_dir, manifest, config)
                return claimed, _kept_cells(output_dir, claimed, planned)

            run_id, done = processes.on_main(claim)  # one process decides; the others learn its cells or error
            _run_cells(config, manager, names, planned, done, run_id, aggregations, processes)
            if not aggregations.by_task:  # every cell was kept: the aggregations come from the task definitions
                manager.hooks = [aggregations]
                manager.load(names)
            return processes.on_main(
                lambda: _write_comparison(config, names, planned, done, aggregations, processes.requests)
            )
        except BaseException as error:
            kept = cells.completed_cells(output_dir, run_id)[0] if run_id is not None else {}
            if run_id is not None and not kept and processes.is_main:
                _undo_start(output_dir, missing)
            if isinstance(error, _Signalled):
                raise EvaluationStopped(str(error), [key for key in planned if key in kept], len(planned)) from None
            raise
        finally:
            stop_processes(processes)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _undo_start(output_dir: Path, created: list[Path]) -> None:
    """A run that ends before its first cell leaves nothing: its manifest goes, and the folders it created (a
    --resume then starts it again, as it would without one)."""
    (output_dir / cells.MANIFEST).unlink(missing_ok=True)
    for folder in created:
        for leftover in (folder / cells.RAW, folder):
            with contextlib.suppress(OSError):
                leftover.rmdir()


def _kept_cells(output_dir: Path, run_id: str, planned: list[cells.CellKey]) -> dict[cells.CellKey, Path]:
    """The run's complete cells (a damaged one is run again, with a warning)."""
    kept, damaged = cells.completed_cells(output_dir, run_id)
    for folder, problem in damaged:
        warn(f"{folder}: a damaged cell ({problem}): running it again")
    return {key: folder for key, folder in kept.items() if key in planned}


def _run_cells(config, manager, names, planned, done, run_id, aggregations, processes: Processes) -> None:
    """lm-eval on every cell not yet ``done``, each saved as its own folder the moment it completes (by the main
    process; with several, each scores a share of every cell's requests: parallel.py)."""
    import lm_eval

    from afp_cli.evaluation.run_tasks import ContextLimits, per_item_demonstrations

    output_dir = Path(config.output_dir)
    finished = {key.model for key in planned} - {key.model for key in planned if key not in done}
    if len(finished) == len({key.model for key in planned}):
        return  # nothing to run: no model is loaded
    models = _hf_models(config) if config.backend == "hf" else _backend_models(config, finished)
    with _progress(processes.is_main) as progress, _without_lm_eval_bars():
        job = progress.add_task("evaluating", total=len(planned), completed=len(done))
        for label, lm in models:
            if label in finished:
                continue
            manager.hooks = [ContextLimits(lm, config.limit, max_gen_toks=config.max_gen_toks), aggregations]
            if config.demonstrations == "per-item":
                manager.hooks.append(per_item_demonstrations)
            for key in (key for key in planned if key.model == label and key not in done):
                shown = "task's own shots" if key.shots is None else f"{key.shots}-shot"
                progress.update(job, description=f"{label}, {shown}, seed {key.seed}")
                with split_scoring(lm, processes):
                    results = lm_eval.simple_evaluate(
                        model=lm,
                        tasks=names,
                        num_fewshot=key.shots,
                        limit=config.limit,
                        task_manager=manager,
                        log_samples=True,
                        random_seed=key.seed,
                        numpy_random_seed=key.seed,
                        torch_random_seed=key.seed,
                        fewshot_random_seed=key.seed,
                    )

                def save(key=key, results=results) -> Path:
                    folder = output_dir / cells.RAW / key.model / _shots_folder(key.shots, results)
                    folder = folder / f"seed{key.seed}" if len(config.seeds) > 1 else folder
                    return cells.save_cell(folder, key, run_id, results)

                done[key] = processes.on_main(save)  # every process has the results; the main one writes
                progress.advance(job)


def _write_comparison(config, names, planned, done, aggregations, requests: list[int]) -> tuple[Path, Path]:
    """The comparison and its paired tests from the saved cells, in the order of the plan; ``requests``: how many
    requests each process scored in this invocation."""
    seeds = config.seeds
    rows: list[dict[str, Any]] = []
    items: dict[tuple[str, int], dict] = {}  # (model, seed) -> per-document values (significance.collect_items)
    for key in planned:
        if key not in done:
            continue  # a non-zero rank of a distributed run: the main one writes the comparison
        results = cells.read_cell(done[key])
        rows.extend(result_rows(key.model, key.shots, results, key.seed))
        items.setdefault((key.model, key.seed), {}).update(
            collect_items(results, lambda task: shots_run(task, results, key.shots))  # noqa: B023
        )
    run = {
        **asdict(config),
        "tasks_run": names,
        "models": model_labels(config.adapters),
        "processes": len(requests),
        "requests_per_process": requests,
    }
    values = {(row["task"], row["shots"], row["metric"], row["model"], row["seed"]): row["value"] for row in rows}
    tests = PairedTests(items, aggregations.by_task, values, resamples=config.bootstrap, seed=seeds[0])
    per_seed = tests.annotate(add_deltas(rows, by_seed=True), per_seed=True) if len(seeds) > 1 else None
    return write_comparison(Path(config.output_dir), tests.annotate(add_deltas(over_seeds(rows))), run, per_seed)
