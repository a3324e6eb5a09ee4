"""Wall time of lm-eval's HF scoring against afp's lean scoring (afp_cli/evaluation/lean_scoring.py), same requests.

The loglikelihood requests of the given tasks are built once, the way `afp evaluate` builds them (afp's task
folder, local data, the fixed k-shot demonstrations of seed 0), by a recording model that scores nothing. Then the
same loaded model scores them with lm-eval's ``HFLM`` and with afp's ``LeanHFLM``, one after the other in this
process (each after a short untimed warm-up), and the script prints both wall times, the ratio and the largest
per-request difference of the two loglikelihoods. Not a test: it asserts nothing.

  python bench/eval_throughput.py --model ~/.cache/afp/models/gemma-3-270m --tasks afp_pawsx_zh \
      --num-fewshot 5 --limit 20 --data-dir /work/shared/data --threads 1
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path


def build_requests(tasks: list[str], shots: int, limit: int | None, data_dir: str) -> list:
    """The loglikelihood Instances lm-eval's ``simple_evaluate`` hands a model for these tasks."""
    import lm_eval
    from lm_eval.api.model import LM

    from afp_cli.evaluation.tasks import build_task_manager, default_include_path

    class Recorder(LM):
        def __init__(self) -> None:
            super().__init__()
            self.requests: list = []

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self.requests.extend(requests)
            return [(0.0, False)] * len(requests)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("this benchmark times loglikelihood requests only")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("this benchmark times loglikelihood requests only")

    recorder = Recorder()
    manager = build_task_manager(default_include_path(), tasks, data_dir)
    lm_eval.simple_evaluate(
        model=recorder, tasks=tasks, num_fewshot=shots, limit=limit, task_manager=manager, fewshot_random_seed=0
    )
    return recorder.requests


def timed(lm, requests) -> tuple[list[tuple[float, bool]], float]:
    lm.loglikelihood(requests[:2], disable_tqdm=True)  # warm-up: first-call allocations, lean scoring's check
    for counter in ("lean_requests", "fallback_requests"):  # LeanHFLM's counts: the timed requests only
        if hasattr(lm, counter):
            setattr(lm, counter, 0)
    start = time.perf_counter()
    results = lm.loglikelihood(requests, disable_tqdm=True)
    return results, time.perf_counter() - start


def add_request_options(parser: argparse.ArgumentParser, limit: int) -> None:
    """The options that say which requests a scoring bench builds (this one and eval_precision.py)."""
    parser.add_argument("--model", required=True, help="model folder or hub name")
    parser.add_argument("--tasks", nargs="+", required=True, help="afp task names (loglikelihood tasks)")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int, default=limit, help="documents per task")
    parser.add_argument("--data-dir", required=True, help="local benchmark data (afp evaluate --data-dir)")
    parser.add_argument("--batch-size", type=int, default=1, help="as afp evaluate's --batch-size (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_request_options(parser, limit=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from afp_cli.evaluation.lean_scoring import LeanHFLM
    from afp_cli.model.loading import load_causal_lm, load_tokenizer

    torch.set_num_threads(args.threads)
    requests = build_requests(args.tasks, args.num_fewshot, args.limit, args.data_dir)
    tokenizer = load_tokenizer(str(Path(args.model).expanduser()))
    model = load_causal_lm(str(Path(args.model).expanduser()), dtype=getattr(torch, args.dtype)).eval()
    reference, reference_time = timed(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size), requests)
    lean_lm = LeanHFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    lean, lean_time = timed(lean_lm, requests)

    deltas = [abs(a[0] - b[0]) for a, b in zip(reference, lean, strict=True)]
    flips = sum(a[1] != b[1] for a, b in zip(reference, lean, strict=True))
    print(
        f"{args.model}: {', '.join(args.tasks)}, {args.num_fewshot}-shot, limit {args.limit}: {len(requests)} "
        f"loglikelihood requests, batch size {args.batch_size}, {args.dtype}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    print(f"lean path: {lean_lm.lean_requests} requests, lm-eval's path (fallback): {lean_lm.fallback_requests}")
    print(f"lm-eval hf: {reference_time:.2f} s")
    print(f"afp lean:   {lean_time:.2f} s")
    print(f"lm-eval hf time / afp time: {reference_time / lean_time:.2f}x")
    print(f"max |delta loglikelihood|: {max(deltas):.3g}")
    print(f"is_greedy flags that differ: {flips}")


if __name__ == "__main__":
    main()
