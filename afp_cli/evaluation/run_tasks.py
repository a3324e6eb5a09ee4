"""Adjust every task lm-eval loads for one run: demonstration sampling, short model contexts, local-data errors.

lm-eval's ``simple_evaluate`` builds its tasks through ``TaskManager.load``; :class:`RunTaskManager` runs afp's
hooks on each task right there, before a single request is built, so a problem is reported before any scoring
and a fix (a capped generation length) applies to exactly the task that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lm_eval.api.samplers import ContextSampler
from lm_eval.tasks import TaskManager

from afp_cli.errors import AfpError, warn

DEMONSTRATION_MODES = ("fixed", "per-item")


class RunTaskManager(TaskManager):
    """A TaskManager that applies ``hooks`` (``task -> None``) to every task it loads."""

    hooks: list[Callable[[Any], None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = []

    def load(self, task_list):  # type: ignore[override]
        try:
            loaded = super().load(task_list)
        except Exception as error:
            raise _as_user_error(error) from None
        for task in loaded["tasks"].values():
            for hook in self.hooks:
                hook(task)
        return loaded


def _as_user_error(error: Exception) -> Exception:
    """A LocalDataError raised by tasks/afp_task_common.py (loaded by path, so matched by name) is the user's
    to fix: one line. Anything else is a bug and keeps its traceback."""
    seen = error
    while seen is not None:
        if type(seen).__name__ == "LocalDataError":
            return AfpError(str(seen))
        seen = seen.__cause__ or seen.__context__
    return error


def per_item_demonstrations(task: Any) -> None:
    """lm-eval's own sampling: new demonstrations for every test item (``--demonstrations per-item``)."""
    if hasattr(task, "sampler") and type(task.sampler).__name__ == "FixedDemonstrations":
        task.sampler = ContextSampler(list(task.fewshot_docs()), rnd=None)


@dataclass
class Aggregations:
    """Record every loaded task's aggregation functions (``{metric: function}``, lm-eval's ``task.aggregation()``),
    so that the paired bootstrap of the comparison recomputes each metric exactly as lm-eval aggregated it."""

    by_task: dict[str, dict[str, Callable]] = field(default_factory=dict)

    def __call__(self, task: Any) -> None:
        self.by_task[task.task_name] = dict(task.aggregation())


@dataclass
class ContextLimits:
    """Check a task against the model's context before lm-eval runs it (an assertion deep inside lm-eval else).

    * ``multiple_choice``: a choice longer than the context cannot be scored: one line naming task, document and
      lengths. Long contexts are fine: lm-eval truncates them from the left, keeping the choice.
    * ``generate_until``: ``max_gen_toks`` must be below the context (the prompt gets the rest): a longer one is
      capped to half the context, with a warning naming the task and both lengths. ``max_gen_toks`` (the user's
      ``--max-gen-toks``) lowers every generation task's own budget first, never raises it.
    """

    lm: Any
    limit: int | None = None
    notify: Callable[[str], None] = warn
    max_gen_toks: int | None = None

    def __call__(self, task: Any) -> None:
        max_length = getattr(self.lm, "max_length", None)
        if not isinstance(max_length, int) or not hasattr(self.lm, "tok_encode"):
            return  # an LM without a token budget (API models): nothing to check
        output_type = task.get_config("output_type")
        if output_type == "generate_until":
            self._cap_generation(task, max_length)
        elif output_type == "multiple_choice":
            self._check_choices(task, max_length)

    def _cap_generation(self, task: Any, max_length: int) -> None:
        generation = dict(task.get_config("generation_kwargs") or {})
        requested = int(generation.get("max_gen_toks", getattr(self.lm, "max_gen_toks", 256)))
        if self.max_gen_toks is not None and self.max_gen_toks < requested:
            requested = generation["max_gen_toks"] = self.max_gen_toks
            task.set_config(key="generation_kwargs", value=generation)
        if requested < max_length:
            return
        capped = max_length // 2
        generation["max_gen_toks"] = capped
        task.set_config(key="generation_kwargs", value=generation)
        self.notify(
            f"{task.task_name}: max_gen_toks {requested} is not below the model's context of {max_length} "
            f"tokens: generating at most {capped} tokens (the prompt is cut from the left to the rest)"
        )

    def _continuation_length(self, context: str, continuation: str) -> int:
        if not context:  # lm-eval conditions an empty context on a prefix token and encodes the choice alone
            return len(self.lm.tok_encode(continuation))
        return len(self.lm._encode_pair(context, continuation)[1])

    def _check_choices(self, task: Any, max_length: int) -> None:
        delimiter = task.get_config("target_delimiter") or ""
        for index, doc in enumerate(task.eval_docs):
            if self.limit is not None and index >= self.limit:
                break
            context = task.doc_to_text(doc)
            if not isinstance(context, str):
                continue  # one context per choice (winogrande style): lm-eval scores a shared continuation
            for choice in task.doc_to_choice(doc):
                length = self._continuation_length(context, f"{delimiter}{choice}")
                if length > max_length:
                    raise AfpError(
                        f"{task.task_name}: document {index}: a choice of {length} tokens does not fit the model's "
                        f"context of {max_length} tokens; evaluate it with a model of a longer context"
                    )
