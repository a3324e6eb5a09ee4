"""What scoring in bfloat16 instead of float32 costs and saves on a CPU: the same lm-eval items, each way.

Each pass scores the same tasks the way `afp evaluate` does with the hf backend (afp's task folder, local data, the
fixed k-shot demonstrations of seed 0), through afp's ``LeanHFLM`` (``--scorer lean``, the default: what evaluate
runs) or lm-eval's ``HFLM`` (``--scorer hf``: what it ran before lean scoring). float32 weights always come first,
the reference; the bf16 variants (``--variants``):

- ``bfloat16``: the weights loaded in bfloat16 (what ``--dtype bfloat16`` does);
- ``bf16-autocast``: float32 weights, every forward pass under bf16 autocast as lm-eval runs it when given
  ``mixed_precision_dtype`` (LeanHFLM applies the same autocast): the matmuls, the LM head included, in bf16 — so
  the logits and lm-eval's log-softmax of them are bfloat16 too;
- ``bf16-autocast-fp32-head`` (lean scorer only): the backbone under bf16 autocast, the LM head and the
  log-softmax in float32 — a prototype of what LeanHFLM could do (a subclass here; afp_cli is unchanged). Its
  one-time support check runs without autocast: it checks the model's structure, which precision does not change.

Printed per bf16 variant against float32: wall times and their ratio, how many requests took the lean path, the
largest and the mean per-request |delta loglikelihood|, the items whose chosen answer differs (accuracy flips), and
each variant's accuracy. It decides afp_cli/model/precision.py's CPU_SCORING_IN_BF16; the figures go to
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


def fp32_head_scorer():
    """LeanHFLM with its LM head (and so the log-softmax) in float32 under a bf16-autocast backbone."""
    import torch

    from afp_cli.evaluation.lean_scoring import LeanHFLM

    class Fp32HeadLeanHFLM(LeanHFLM):
        def _head(self, hidden: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=self.device.type, enabled=False):
                return super()._head(hidden.float())

        def _check_support(self):
            mixed, self.mixed_precision_dtype = self.mixed_precision_dtype, None
            try:
                return super()._check_support()
            finally:
                self.mixed_precision_dtype = mixed

    return Fp32HeadLeanHFLM


def score(model, tokenizer, args, variant: str) -> tuple[dict, float, str]:
    """lm-eval's per-sample records (task → samples), the wall time of scoring them, and which path scored them."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from afp_cli.evaluation.lean_scoring import LeanHFLM
    from afp_cli.evaluation.tasks import build_task_manager, default_include_path

    manager = build_task_manager(default_include_path(), args.tasks, args.data_dir)
    # HFLM (and LeanHFLM, as it) runs every forward pass in its own torch.autocast (off unless
    # mixed_precision_dtype is given), which switches an outer autocast off: the bf16 autocast pass is asked of
    # the scorer itself
    autocast = variant.startswith("bf16-autocast")
    mixed = {"mixed_precision_dtype": torch.bfloat16} if autocast else {}
    if variant == "bf16-autocast-fp32-head":
        scorer = fp32_head_scorer()
    else:
        scorer = LeanHFLM if args.scorer == "lean" else HFLM
    lm = scorer(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, **mixed)
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
    seconds = time.perf_counter() - start
    path = "lm-eval's HFLM"
    if isinstance(lm, LeanHFLM):
        path = f"lean path {lm.lean_requests} requests, lm-eval's path {lm.fallback_requests}"
        if not lm.lean_support().supported:
            path += f" (lean scoring off: {lm.lean_support().reason})"
    return results["samples"], seconds, path


VARIANTS = ("bfloat16", "bf16-autocast", "bf16-autocast-fp32-head")


def per_item(samples: dict) -> dict[tuple[str, int], tuple[list[float], float]]:
    """(task, doc id) → (the loglikelihood of every choice, the item's accuracy)."""
    items = {}
    for task, records in samples.items():
        for record in records:
            loglikelihoods = [float(response[0][0]) for response in record["resps"]]
            items[(task, record["doc_id"])] = (loglikelihoods, float(record["acc"]))
    return items


def main() -> None:
    from eval_throughput import add_request_options  # bench/ is on sys.path when a bench runs as a script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_request_options(parser, limit=50)
    parser.add_argument(
        "--scorer",
        choices=("lean", "hf"),
        default="lean",
        help="afp's LeanHFLM (what afp evaluate's hf backend runs) or lm-eval's HFLM",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
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
    if "bf16-autocast-fp32-head" in args.variants and args.scorer != "lean":
        parser.error("bf16-autocast-fp32-head is a LeanHFLM variant: --scorer lean")
    scored, seconds, paths = {}, {}, {}
    for label in ["float32", *args.variants]:
        # bfloat16 weights for that variant alone; the others keep float32 weights
        model = load_causal_lm(folder, dtype=torch.bfloat16 if label == "bfloat16" else torch.float32).eval()
        samples, seconds[label], paths[label] = score(model, tokenizer, args, label)
        scored[label] = per_item(samples)
        del model

    full = scored["float32"]
    # the answer each variant picks: the choice with the highest loglikelihood (lm-eval's acc)
    choice = {label: {key: lls.index(max(lls)) for key, (lls, _) in items.items()} for label, items in scored.items()}
    accuracy = {label: statistics.mean(value[1] for value in items.values()) for label, items in scored.items()}
    requests = sum(len(lls) for lls, _ in full.values())
    print(
        f"{args.model}: {', '.join(args.tasks)}, {args.num_fewshot}-shot, limit {args.limit}: {len(full)} items, "
        f"{requests} loglikelihood requests, {args.scorer} scorer, batch size {args.batch_size}; "
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
        f"AVX512-BF16/AMX {'yes' if cpu_has_fast_bf16() else 'no'}"
    )
    print(f"{'float32':<14}{seconds['float32']:>7.1f} s, accuracy {accuracy['float32']:.3f}; {paths['float32']}")
    for label in args.variants:
        items = scored[label]
        deltas = [abs(a - b) for key in full for a, b in zip(full[key][0], items[key][0], strict=True)]
        flips = sum(choice["float32"][key] != choice[label][key] for key in full)
        print(f"{label:<14}{seconds[label]:>7.1f} s, accuracy {accuracy[label]:.3f}; {paths[label]}")
        print(f"  float32 time / {label} time: {seconds['float32'] / seconds[label]:.2f}x")
        print(f"  max |delta loglikelihood|: {max(deltas):.3g} (mean {statistics.mean(deltas):.3g})")
        print(f"  accuracy flips (chosen answer differs): {flips} of {len(full)} items")


if __name__ == "__main__":
    main()
