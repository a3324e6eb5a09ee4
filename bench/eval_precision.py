"""What scoring in bfloat16 instead of float32 costs and saves on a CPU: the same lm-eval items, each way.

The model folder is loaded in float32 and in bfloat16 (what `afp evaluate --dtype` chooses between), and each copy
scores the same tasks; a third pass scores with the float32 weights under bf16 autocast (matmuls in bf16; norms,
softmax and log-probabilities in fp32, as `afp align` trains), which `--dtype` does not offer. Each pass scores
through lm-eval's ``HFLM`` the way `afp evaluate` does with the hf backend (afp's task folder, local data, the fixed
k-shot demonstrations of seed 0). Printed per bf16 variant against float32: wall times and their ratio, the largest
and the mean per-request |delta loglikelihood|, the items whose chosen answer differs (accuracy flips), and each
variant's accuracy. It decides afp_cli/model/precision.py's CPU_SCORING_IN_BF16; the figures go to
bench/RESULTS.md. Not a test: it asserts nothing.

  python bench/eval_precision.py --model ~/.cache/afp/models/smollm2-135m-instruct \
      --tasks afp_pawsx_zh afp_xcopa_zh --limit 50 --data-dir /work/shared/data --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path


def score(model, tokenizer, args, autocast: bool = False) -> tuple[dict, float]:
    """lm-eval's per-sample records (task → samples) and the wall time of scoring them."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from afp_cli.evaluation.tasks import build_task_manager, default_include_path

    manager = build_task_manager(default_include_path(), args.tasks, args.data_dir)
    # HFLM runs every forward pass in its own torch.autocast (off unless mixed_precision_dtype is given), which
    # switches an outer autocast off: the bf16 autocast pass is asked of HFLM itself
    mixed = {"mixed_precision_dtype": torch.bfloat16} if autocast else {}
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, **mixed)
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=args.tasks,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        task_manager=manager,
        log_samples=True,
        fewshot_random_seed=0,
        bootstrap_iters=0,
    )
    return results["samples"], time.perf_counter() - start


def per_item(samples: dict) -> dict[tuple[str, int], tuple[list[float], float]]:
    """(task, doc id) → (the loglikelihood of every choice, the item's accuracy)."""
    items = {}
    for task, records in samples.items():
        for record in records:
            loglikelihoods = [float(response[0][0]) for response in record["resps"]]
            items[(task, record["doc_id"])] = (loglikelihoods, float(record["acc"]))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a local model folder (weights + tokenizer)")
    parser.add_argument("--tasks", nargs="+", required=True, help="afp multiple-choice tasks (loglikelihood)")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int, default=50, help="documents per task")
    parser.add_argument("--data-dir", required=True, help="local benchmark data (afp evaluate --data-dir)")
    parser.add_argument("--batch-size", type=int, default=1, help="as afp evaluate's --batch-size (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("bfloat16", "bf16-autocast"),
        default=["bfloat16", "bf16-autocast"],
        help="the bf16 variants compared with float32 (always scored)",
    )
    args = parser.parse_args()

    import torch

    from afp_cli.model.loading import load_causal_lm, load_tokenizer
    from afp_cli.model.precision import cpu_has_fast_bf16

    torch.set_num_threads(args.threads)
    folder = str(Path(args.model).expanduser())
    tokenizer = load_tokenizer(folder)
    scored, seconds = {}, {}
    # (label, weights dtype, autocast): float32 first, the reference every bf16 variant is compared with
    known = {"bfloat16": ("bfloat16", "bfloat16", False), "bf16-autocast": ("bf16 autocast", "float32", True)}
    variants = [("float32", "float32", False)] + [known[name] for name in args.variants]
    for label, dtype, autocast in variants:
        model = load_causal_lm(folder, dtype=getattr(torch, dtype)).eval()
        samples, seconds[label] = score(model, tokenizer, args, autocast)
        scored[label] = per_item(samples)
        del model

    full = scored["float32"]
    # the answer each variant picks: the choice with the highest loglikelihood (lm-eval's acc)
    choice = {label: {key: lls.index(max(lls)) for key, (lls, _) in items.items()} for label, items in scored.items()}
    accuracy = {label: statistics.mean(value[1] for value in items.values()) for label, items in scored.items()}
    requests = sum(len(lls) for lls, _ in full.values())
    print(
        f"{args.model}: {', '.join(args.tasks)}, {args.num_fewshot}-shot, limit {args.limit}: {len(full)} items, "
        f"{requests} loglikelihood requests, batch size {args.batch_size}; torch {torch.__version__}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}, AVX512-BF16/AMX "
        f"{'yes' if cpu_has_fast_bf16() else 'no'}"
    )
    print(f"{'float32':<14}{seconds['float32']:>7.1f} s, accuracy {accuracy['float32']:.3f}")
    for label, _, _ in variants[1:]:
        items = scored[label]
        deltas = [abs(a - b) for key in full for a, b in zip(full[key][0], items[key][0], strict=True)]
        flips = sum(choice["float32"][key] != choice[label][key] for key in full)
        print(f"{label:<14}{seconds[label]:>7.1f} s, accuracy {accuracy[label]:.3f}")
        print(f"  float32 time / {label} time: {seconds['float32'] / seconds[label]:.2f}x")
        print(f"  max |delta loglikelihood|: {max(deltas):.3g} (mean {statistics.mean(deltas):.3g})")
        print(f"  accuracy flips (chosen answer differs): {flips} of {len(full)} items")


if __name__ == "__main__":
    main()
