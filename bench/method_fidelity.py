"""Does aligning with afp do what the AFP paper says? A controlled experiment, offline and seeded, with afp's commands.

The paper's situation in miniature (issue #11 §2): a small LLaMA is pre-trained from scratch on monolingual English
and Chinese text (never a translation pair), then aligned with `afp align` four ways — none (base), MCL only,
CIT only, MCL + CIT — with the same data, steps and seed, and measured on held-out pairs:
  retrieval  `afp analyze alignment`: top-1 retrieval en→zh / zh→en at layer 1 (MCL's pooling layer) and the last
  chrF++/BLEU `afp evaluate --tasks afp_flores` on a FLORES-layout folder built from the held-out pairs, 0/1-shot
  language    `afp analyze language-rate --generations` on lm-eval's samples of that evaluation
  CIT loss   `afp analyze loss`: held-out translation loss over the answer tokens of the held-out pairs' AFP file
Every seed repeats the alignment runs; a difference smaller than the spread over seeds is called noise.

`--study lora` (issue #16) runs MCL only and MCL + CIT under each LoRA target preset × pooling layer instead.

  python bench/method_fidelity.py --quick --out runs/fidelity-quick          # < 10 min on 2 cores
  python bench/method_fidelity.py --out runs/fidelity                        # 3 seeds
  python bench/method_fidelity.py --study lora --out runs/fidelity-lora      # LoRA targets × pooling, 3 seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

from fidelity_data import PartSizes, read_pairs, split_parts, write_flores_layout, write_tsv  # noqa: E402
from fidelity_pretrain import PretrainSettings, pretrain  # noqa: E402
from fidelity_report import write_reports  # noqa: E402

PARALLEL = REPO.parent / "shared" / "data" / "parallel" / "tatoeba_en-zh.tsv"
DEFAULT_CACHE = Path(os.environ.get("AFP_CACHE_DIR", "~/.cache/afp")).expanduser() / "method-fidelity"

# The main comparison uses afp's default LoRA targets (`auto` = embeddings + every block's linear layers): the
# closest LoRA gets to the official code, which fine-tunes all weights, embeddings included
# (script/run_sup_example.sh). `--study lora` measures the presets against each other (issue #16).
MAIN_TARGETS = "auto"
STUDY_TARGETS = ("attention", "all-linear", "embeddings+attention", "embeddings+all-linear")

FLORES_TASKS = (("afp_flores_eng_Latn-zho_Hans", "en_zh"), ("afp_flores_zho_Hans-eng_Latn", "zh_en"))
OBJECTIVES = {"mcl": (1.0, 0.0), "cit": (0.0, 1.5), "mcl+cit": (1.0, 1.5)}  # variant -> (mcl.weight, cit.weight)


@dataclass(frozen=True)
class Scale:
    """Everything --quick shrinks."""

    sizes: PartSizes
    pretrain: PretrainSettings
    align_steps: int
    eval_limit: int  # held-out sentences translated per direction and shot count
    retrieval_pairs: int  # held-out pairs for retrieval (chance = 1 / retrieval_pairs)


FULL = Scale(
    PartSizes(pretrain_en=6000, pretrain_zh=6000, align=3000, dev=100, held_out=500),
    PretrainSettings(steps=2000),
    align_steps=300,
    eval_limit=40,
    retrieval_pairs=500,
)
QUICK = Scale(
    PartSizes(pretrain_en=4000, pretrain_zh=4000, align=2000, dev=50, held_out=200),
    PretrainSettings(steps=700, vocab_size=2000),
    align_steps=200,
    eval_limit=30,
    retrieval_pairs=200,
)


@dataclass(frozen=True)
class RunSpec:
    """One `afp align` run: an objective mix under one LoRA target preset and one pooling."""

    variant: str  # mcl | cit | mcl+cit
    targets: str = MAIN_TARGETS
    pooling: str = "last-1"

    @property
    def name(self) -> str:
        """Folder and model label: lm-eval samples and reports are grouped by it."""
        return "-".join([self.variant.replace("+", "-"), self.targets.replace("+", "-"), self.pooling])


def runs_for(study: str, targets: str = MAIN_TARGETS) -> list[RunSpec]:
    """main: the paper's ablation. lora: MCL only under every target preset × pooling (MCL + CIT under the default
    targets is the main study's run: same data, steps and seeds)."""
    if study == "main":
        return [RunSpec(variant, targets) for variant in ("mcl", "cit", "mcl+cit")]
    return [RunSpec("mcl", targets, pooling) for targets in STUDY_TARGETS for pooling in ("last-1", "last")]


class Recorder:
    """Runs afp commands one at a time (one torch thread each) and keeps the exact command lines."""

    def __init__(self, log_path: Path):
        self.commands: list[str] = []
        self.log_path = log_path
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    @staticmethod
    def shown(args) -> str:
        """The command line as the report lists it."""
        return "afp " + shlex.join(map(str, args))

    def kept(self, *args: str | Path) -> None:
        """List a command whose result an earlier invocation made (the report names every command behind it)."""
        self.commands.append(f"{self.shown(args)}  # kept from an earlier invocation")

    def afp(self, *args: str | Path) -> None:
        command = [sys.executable, "-m", "afp_cli.cli", *map(str, args)]
        shown = self.shown(args)
        self.commands.append(shown)
        say(f"$ {shown}")
        started = time.monotonic()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {shown}\n")
            log.flush()
            done = subprocess.run(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"command failed (exit {done.returncode}), see {self.log_path}: {shown}")
        say(f"  done in {time.monotonic() - started:.0f} s")


def build_translation_file(recorder: Recorder, parallel: Path, output: Path) -> None:
    """An AFP training file from en-zh pairs with `afp data translation`: both directions (change-prob 0.5), each
    pair once, seed 0 — the same build for every bench that aligns on Tatoeba pairs."""
    recorder.afp(
        "data",
        "translation",
        "--parallel",
        parallel,
        "--languages",
        "en",
        "zh",
        "--change-prob",
        "0.5",
        "--repeat",
        "1",
        "--seed",
        "0",
        "--output",
        output,
        "--overwrite",
    )


def say(text: str) -> None:
    print(text, flush=True)


def write_recipe(path: Path, base: Path, train_file: Path, steps: int) -> Path:
    """The shared recipe; each run overrides only the objective weights, targets, pooling, seed and output."""
    path.write_text(
        f"""# method_fidelity: the recipe every alignment run of bench/method_fidelity.py starts from.
model:
  name_or_path: {base}
lora:
  r: 16
  alpha: 32
  dropout: 0.05
mcl:
  weight: 1.0
  temperature: 0.05
  pooling: last-1
cit:
  weight: 1.5
data:
  train_file: {train_file}
  held_out: 64
  max_length: 64
train:
  max_steps: {steps}
  batch_size: 32            # in-batch negatives: 16 gave MCL a third of the retrieval 32 gives (quick scale)
  lr: 3.0e-3                # LoRA on a tiny from-scratch model learns fast; 1e-3 aligned 3x less in 250 steps
  scheduler: cosine
  warmup_ratio: 0.03
  log_every: 50
  eval_every: 0
  save_every: 0
  cpu_threads: 1
""",
        encoding="utf-8",
    )
    return path


def prepare(args, scale: Scale, recorder: Recorder) -> dict:
    """Parts, pre-trained base model, training file, held-out files: shared by every seed."""
    from afp_cli.align.config import load_config

    data_dir = args.out / "data"
    parts = split_parts(read_pairs(args.parallel), scale.sizes)
    base = pretrain(parts.pretraining_texts(), scale.pretrain, args.cache_dir, log=say)
    align_tsv = write_tsv(data_dir / "align.tsv", parts.align)
    held_out_tsv = write_tsv(data_dir / "held_out.tsv", parts.held_out)
    write_flores_layout(data_dir, parts.dev, parts.held_out)
    train_file, held_out_file = data_dir / "align.jsonl", data_dir / "held_out.jsonl"
    for source, target in ((align_tsv, train_file), (held_out_tsv, held_out_file)):
        build_translation_file(recorder, source, target)
    recipe = write_recipe(args.out / "recipe.yaml", base, train_file, scale.align_steps)
    return {
        "base": base,
        "recipe": recipe,
        "data_dir": data_dir,
        "held_out_tsv": held_out_tsv,
        "held_out_file": held_out_file,
        "layers": scale.pretrain.num_hidden_layers,
        "max_length": load_config(recipe).data.max_length,
    }


def run_seed(
    seed: int, specs: list[RunSpec], shared: dict, scale: Scale, recorder: Recorder, out: Path, generation: bool
) -> list[dict]:
    """Align every spec with this seed, then measure base and all adapters; one result row per model.

    ``generation``: also translate the held-out sentences (chrF++, BLEU, language rate); the LoRA study of MCL-only
    runs skips it, since MCL alone is not trained to generate.
    """
    folder = out / f"seed-{seed}"
    adapters = []
    for spec in specs:
        mcl_weight, cit_weight = OBJECTIVES[spec.variant]
        run_dir = folder / "runs" / spec.name
        recorder.afp(
            "align",
            shared["recipe"],
            f"mcl.weight={mcl_weight}",
            f"cit.weight={cit_weight}",
            f"mcl.pooling={spec.pooling}",
            f"lora.targets={spec.targets}",
            f"train.seed={seed}",
            f"output_dir={run_dir}",
            "--overwrite",
        )
        adapters.append(run_dir)
    adapter_args = [item for run_dir in adapters for item in ("--adapter", run_dir)]
    last = shared["layers"]
    recorder.afp(
        "analyze",
        "alignment",
        "--model",
        shared["base"],
        *adapter_args,
        "--pairs",
        shared["held_out_tsv"],
        "--layers",
        f"1,{last}",
        "--pooling",
        "last",
        "--max-pairs",
        scale.retrieval_pairs,
        "--seed",
        seed,
        "--device",
        "cpu",
        "--output-dir",
        folder / "alignment",
        "--overwrite",
    )
    labels = ["base"] + [run_dir.name for run_dir in adapters]
    if generation:
        recorder.afp(
            "evaluate",
            "--model",
            shared["base"],
            *adapter_args,
            "--tasks",
            "afp_flores",
            "--num-fewshot",
            "0,1",
            "--data-dir",
            shared["data_dir"],
            "--limit",
            scale.eval_limit,
            "--seed",
            seed,
            "--device",
            "cpu",
            "--output-dir",
            folder / "eval",
            "--overwrite",
        )
        # one call scores every model and shot count: it reads both from afp evaluate's raw/<model>/<k>shot/ folders
        samples = sorted((folder / "eval" / "raw").glob("*/*shot/samples_*.jsonl"))
        recorder.afp(
            "analyze",
            "language-rate",
            *[item for path in samples for item in ("--generations", path)],
            "--output-dir",
            folder / "rate",
            "--overwrite",
        )
    # the same tokenisation as training: the recipe's data.max_length
    recorder.afp(
        "analyze",
        "loss",
        "--model",
        shared["base"],
        *adapter_args,
        "--data",
        shared["held_out_file"],
        "--max-length",
        shared["max_length"],
        "--seed",
        seed,
        "--device",
        "cpu",
        "--output-dir",
        folder / "loss",
        "--overwrite",
    )
    return collect_rows(seed, folder, [None, *specs], labels, last, generation)


def collect_rows(
    seed: int, folder: Path, specs: list[RunSpec | None], labels: list[str], last: int, generation: bool
) -> list[dict]:
    alignment = json.loads((folder / "alignment" / "alignment.json").read_text())["rows"]
    losses = {row["model"]: row for row in json.loads((folder / "loss" / "loss.json").read_text())["rows"]}
    rows = []
    for spec, label in zip(specs, labels):
        row = {
            "variant": spec.variant if spec else "base",
            "seed": seed,
            "model": label,
            "targets": spec.targets if spec else None,
            "pooling": spec.pooling if spec else None,
        }
        for layer_name, layer in (("layer1", 1), ("last", last)):
            found = next(item for item in alignment if item["model"] == label and item["layer"] == layer)
            row[f"retrieval_{layer_name}_en_zh"] = found["retrieval_x_to_y"]
            row[f"retrieval_{layer_name}_zh_en"] = found["retrieval_y_to_x"]
        pooled_at = "last" if spec and spec.pooling == "last" else "layer1"
        row["retrieval_top1"] = (row[f"retrieval_{pooled_at}_en_zh"] + row[f"retrieval_{pooled_at}_zh_en"]) / 2
        row["held_out_cit_loss"] = losses[label]["cit_loss"]
        if generation:
            row.update(generation_metrics(folder, label))
        rows.append(row)
    return rows


def generation_metrics(folder: Path, label: str) -> dict:
    """chrF++ and BLEU (afp evaluate) and language rate (afp analyze language-rate) of one model: per direction and
    shot count, and their mean."""
    comparison = json.loads((folder / "eval" / "comparison.json").read_text())["rows"]
    rate_rows = json.loads((folder / "rate" / "language_rate.json").read_text())["rows"]
    row = {}
    for metric, key in (("chrfpp", "chrf"), ("bleu", "bleu")):
        for shots in (0, 1):
            for task, direction in FLORES_TASKS:
                row[f"{key}_{shots}shot_{direction}"] = _metric(comparison, task, shots, metric, label)
        row[key] = _mean([row[f"{key}_{shots}shot_{d}"] for shots in (0, 1) for d in ("en_zh", "zh_en")])
    rates = []
    for rate_row in rate_rows:
        if rate_row["model"] == label:
            row[f"language_rate_{rate_row['shots']}shot_{rate_row['direction'].replace('-', '_')}"] = rate_row["rate"]
            rates.append(rate_row["rate"])
    row["language_rate"] = _mean(rates)
    return row


def _metric(comparison: list[dict], task: str, shots: int, metric: str, model: str) -> float:
    for row in comparison:
        if row["task"] == task and row["shots"] == shots and row["model"] == model and row["metric"].startswith(metric):
            return row["value"]
    raise SystemExit(f"afp evaluate wrote no {metric} for {task} {shots}-shot {model}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller model, data and runs (< 10 min on 2 cores)")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=None, help="alignment seeds (default: 0 1 2; --quick: 0)"
    )
    parser.add_argument(
        "--study",
        choices=("main", "lora"),
        default="main",
        help="main: base / MCL / CIT / MCL+CIT; lora: MCL and MCL+CIT × LoRA targets × pooling",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.json, results.md, PNG)")
    parser.add_argument(
        "--targets",
        default=MAIN_TARGETS,
        choices=(MAIN_TARGETS, *STUDY_TARGETS),
        help="lora.targets of the main study's runs (default: afp's default, auto)",
    )
    parser.add_argument("--parallel", type=Path, default=PARALLEL, help="the en-zh TSV the parts are cut from")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where pre-trained base models are kept")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.cache_dir = args.cache_dir.expanduser().resolve()
    # --quick checks the machinery and the one effect that must hold at any scale, with one seed
    seeds = args.seed if args.seed is not None else ([0] if args.quick else [0, 1, 2])
    scale = QUICK if args.quick else FULL
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    recorder = Recorder(args.out / "commands.log")
    shared = prepare(args, scale, recorder)
    specs = runs_for(args.study, args.targets)
    rows = []
    for seed in seeds:
        rows.extend(run_seed(seed, specs, shared, scale, recorder, args.out, generation=args.study == "main"))
    context = {
        "study": args.study,
        "targets": args.targets,
        "quick": args.quick,
        "seeds": seeds,
        "scale": dataclasses.asdict(scale),
        "base_model": str(shared["base"]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": load_at_start,
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", "bench/method_fidelity.py", *(argv or sys.argv[1:])]),
        "seconds": round(time.monotonic() - started),
    }
    write_reports(args.out, rows, recorder.commands, context)
    say(f"wrote {args.out / 'results.md'} ({context['seconds']} s)")


if __name__ == "__main__":
    main()
