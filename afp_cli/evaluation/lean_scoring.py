"""lm-eval's HF model, scoring loglikelihood requests with only the computation whose result is read.

lm-eval's ``HFLM._loglikelihood_tokens`` runs every request as one full sequence and projects every position onto
the vocabulary, then reads the log-probabilities of the continuation tokens only. :class:`LeanHFLM` gives the same
numbers (the same tokens, the same model, the same log-softmax) while computing

1. the LM head only at the positions whose next-token distribution scores a continuation token: the backbone runs
   without its head, and the head (and the model's final logit soft-capping, as Gemma 2/3 have it) is applied to
   those hidden states only. For Gemma 3's 262,144-token vocabulary that projection costs more than the blocks.
2. a shared prefix once, at two levels (prefix_groups.py). A family's shared prefix (the k-shot demonstrations;
   for an item alone, its whole context but the last token, which its choices then share) is encoded once and its
   KV cache kept. Within the family, an item with several choices has the rest of its context but the last token
   (its suffix) encoded once more, continuing the prefix, and each choice continues that as a short row (the last
   context token and the continuation); a request alone in its item continues the prefix as one row (the rest of
   its context and its continuation). Rows are batched over a cache expanded to the batch; items' suffixes of
   different lengths are right padded, and the padding is masked out of what their choices attend to.

Requests stay on lm-eval's own path where reusing a cache would not be exact or the tokens would differ: a request
lm-eval would left-truncate to ``max_length``, a request longer than the model's sliding attention window (the
window then hides the start of the sequence, and a cache keeps only the window), and the whole model when a
check at the first call finds that backbone + head + cache do not reproduce the model's own logits (an
architecture that scales its logits otherwise, no cache support, a peft prompt-learning adapter).
``loglikelihood_rolling`` and ``generate_until`` are lm-eval's. docs/scoring.md says the same for users.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

from afp_cli.evaluation.prefix_groups import BatchLimits, Family, ItemBatch, Row, Tokens, group_requests, plan_family
from afp_cli.model.blocks import backbone

# lm-eval's request triple: ((context string, continuation string) or None, context ids, continuation ids)
Request = tuple[tuple[str, str] | None, list[int], list[int]]
AUTO_BATCH_ROWS = 8  # rows per forward when lm-eval's batch size is "auto" (its detection sizes full sequences)
MIN_ROWS = 8  # the fewest rows per forward: short rows over one cache (weights read once for 8 rows)
CHOICES_PER_ITEM = 4  # choice rows a pass plans per item of a suffix pass: 8 items of up to 4 choices in one pass
HEAD_ROWS = 512  # positions projected onto the vocabulary at once: 512 x 262,144 fp32 logits = 0.5 GiB


@dataclass(frozen=True)
class LeanSupport:
    """Whether the lean path reproduces this model's logits, and if not, why (said once, in the log)."""

    supported: bool
    reason: str = ""


class LeanHFLM(HFLM):
    """A drop-in ``HFLM`` whose ``loglikelihood`` computes the LM head on continuation positions only and shared
    prefixes once; results equal HFLM's (fp32: within 1e-4, the same is_greedy flags)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._support: LeanSupport | None = None
        self._rolling = False
        self.lean_requests = 0  # requests scored on the lean path, for tests and the benchmark
        self.fallback_requests = 0  # requests handed to lm-eval's path

    # -- lm-eval entry points -----------------------------------------------------------------------------------

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # lm-eval's rolling windows go through _loglikelihood_tokens too: keep them on its own path
        self._rolling = True
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._rolling = False

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        if self._rolling or not self.lean_support().supported:
            self.fallback_requests += len(requests)
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        lean = [index for index, (_, context, continuation) in enumerate(requests) if self.fits(context, continuation)]
        lean_set = set(lean)
        rest = [index for index in range(len(requests)) if index not in lean_set]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        if rest:
            self.fallback_requests += len(rest)
            scored = super()._loglikelihood_tokens(
                [requests[index] for index in rest], disable_tqdm=disable_tqdm, override_bs=override_bs
            )
            for index, answer in zip(rest, scored, strict=True):
                results[index] = answer
        if lean:
            self.lean_requests += len(lean)
            subset = [requests[index] for index in lean]
            for index, answer in zip(lean, self._lean_loglikelihood(subset, disable_tqdm), strict=True):
                results[index] = answer
        return results  # type: ignore[return-value]

    # -- when the lean path applies -----------------------------------------------------------------------------

    def fits(self, context: Sequence[int], continuation: Sequence[int]) -> bool:
        """True when lm-eval would score this request from exactly its own tokens (no left truncation) and no
        sliding attention window is shorter than its input."""
        inputs = len(context) + len(continuation) - 1  # lm-eval drops the last continuation token from the input
        if inputs > self.max_length:
            return False
        window = self._sliding_window()
        # a cache keeps a sliding layer's last window-1 tokens: below that, sliding attention sees everything
        return window is None or inputs < window

    def _sliding_window(self) -> int | None:
        window = getattr(self.model.config, "sliding_window", None)
        return window if isinstance(window, int) else None

    def lean_support(self) -> LeanSupport:
        """Checked once per model: backbone + head + soft-capping, continued from a cache, reproduce its logits."""
        if self._support is None:
            self._support = self._check_support()
            if not self._support.supported:
                from lm_eval.models.huggingface import eval_logger

                eval_logger.warning(f"afp lean scoring off, lm-eval's path used: {self._support.reason}")
        return self._support

    def _check_support(self) -> LeanSupport:
        if self.backend != "causal":
            return LeanSupport(False, "not a causal LM")
        peft_config = getattr(self.model, "peft_config", None)
        if peft_config and any(getattr(config, "is_prompt_learning", False) for config in peft_config.values()):
            return LeanSupport(False, "a peft prompt-learning adapter adds virtual tokens")
        try:
            decoder = backbone(self.model)
        except AttributeError:
            return LeanSupport(False, f"no backbone found in {type(self.model).__name__}")
        if _cache_keyword(decoder) is None:
            return LeanSupport(False, f"{type(decoder).__name__} takes no KV cache")
        parameters = inspect.signature(decoder.forward).parameters
        if "attention_mask" not in parameters or "position_ids" not in parameters:  # the second level needs both
            return LeanSupport(False, f"{type(decoder).__name__} takes no attention_mask or position_ids")
        probe = torch.tensor([[self.prefix_token_id, *range(1, 8)]], device=self.device) % self.model.config.vocab_size
        ids = tuple(probe[0].tolist())
        with self._inference():
            full = self.model(probe).logits[0].float()
            cache = self._encode(probe[:, :4], None).cache
            continued = self._encode(probe[:, 4:], _fork(cache)).last_hidden_state[0]
            # the second level: two suffixes of different lengths (the shorter one padded), each continued by a row
            suffixes = self._encode(self._ids([ids[4:6], ids[4:5]]), _repeated(cache, 2)).cache
            after = self._after_suffixes(suffixes, 4, [2, 1], [0, 1], [ids[6:8], ids[5:8]])
            pairs = [(continued, full[4:]), (after[0, :2], full[6:8]), (after[1], full[5:8])]
            difference = max((self._head(hidden).float() - logits).abs().max().item() for hidden, logits in pairs)
        # a cached pass sums in another order: allow that rounding (a few steps of the model's dtype, 1e-4 at the
        # least), far below what a missing logit transform (soft-capping, scaling) changes
        tolerance = max(1e-4, 8 * torch.finfo(self.model.dtype).eps) * max(1.0, full.abs().max().item())
        if difference > tolerance:
            return LeanSupport(False, f"backbone + head from a cache differ from the model's logits by {difference}")
        return LeanSupport(True)

    # -- the lean path ------------------------------------------------------------------------------------------

    def _lean_loglikelihood(self, requests: list[Request], disable_tqdm: bool) -> list[tuple[float, bool]]:
        import lm_eval.models.huggingface as huggingface  # its tqdm, so that afp's switch silences this bar too

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        families = group_requests([tuple(context) for _, context, _ in requests])
        continuations = [tuple(continuation) for _, _, continuation in requests]
        bar = huggingface.tqdm(
            total=len(requests), disable=(disable_tqdm or self.rank != 0), desc="Running loglikelihood requests"
        )
        with self._inference():
            for family in families:
                for index, answer in self._score_family(family, continuations):
                    results[index] = answer
                    key = requests[index][0]
                    if key is not None:
                        self.cache_hook.add_partial("loglikelihood", key, answer)
                    bar.update(1)
        bar.close()
        return results  # type: ignore[return-value]

    def _score_family(self, family: Family, continuations: list[Tokens]) -> Iterator[tuple[int, tuple[float, bool]]]:
        """The family's shared prefix once (its KV cache kept), then its plan (prefix_groups.plan_family): rows
        continuing the prefix, and items whose suffix is encoded once and continued by their choices. The head
        then reads the continuation positions of the whole family, in chunks."""
        plan = plan_family(family, continuations, self._batch_limits())
        prefix_cache = self._encode(self._ids([family.prefix]), None).cache if family.prefix_length > 0 else None
        scored = self._continue_prefix(prefix_cache, plan.rows, continuations)
        for batch in plan.item_batches:
            scored.update(self._continue_items(prefix_cache, family.prefix_length, batch, continuations))
        order = sorted(scored)
        targets = torch.tensor([token for index in order for token in continuations[index]], device=self.device)
        token_log_probs, greedy_tokens = self._read_head(torch.cat([scored[index] for index in order]), targets)
        offset = 0
        for index in order:
            span = slice(offset, offset + len(continuations[index]))
            offset = span.stop
            greedy = bool((greedy_tokens[span] == targets[span]).all())
            yield index, (float(token_log_probs[span].sum()), greedy)

    def _continue_prefix(self, prefix_cache, rows: list[Row], continuations: list[Tokens]) -> dict[int, torch.Tensor]:
        """The first level: each row continues the family prefix; rows of similar length batched over copies of
        the prefix cache. Returns each request's hidden states at its continuation positions."""
        rows = sorted(rows, key=lambda row: len(row.tokens))  # little right padding in a batch
        scored: dict[int, torch.Tensor] = {}
        for start in range(0, len(rows), self._rows_per_forward()):
            batch = rows[start : start + self._rows_per_forward()]
            # right padding after the real tokens, as lm-eval pads: a causal model's real positions never see it
            tokens = self._ids([row.tokens for row in batch])
            hidden = self._encode(tokens, _repeated(prefix_cache, len(batch))).last_hidden_state
            for place, row in enumerate(batch):
                scored[row.request] = hidden[place, row.first : row.first + len(continuations[row.request])]
        return scored

    def _continue_items(
        self, prefix_cache, prefix_length: int, batch: ItemBatch, continuations: list[Tokens]
    ) -> dict[int, torch.Tensor]:
        """The second level: the items' suffixes in one pass over copies of the prefix cache (right padded: no
        real position sees the padding), then their choices continuing each its own item's row of that cache."""
        suffix_cache = self._encode(self._ids(batch.suffixes), _repeated(prefix_cache, len(batch.suffixes))).cache
        scored: dict[int, torch.Tensor] = {}
        for choices in batch.choice_passes:
            places = [place for place, _ in choices]
            lengths = [len(batch.suffixes[place]) for place in places]
            rows = [row for _, row in choices]
            hidden = self._after_suffixes(suffix_cache, prefix_length, lengths, places, [row.tokens for row in rows])
            for place, row in enumerate(rows):
                scored[row.request] = hidden[place, row.first : row.first + len(continuations[row.request])]
        return scored

    def _after_suffixes(
        self,
        suffix_cache,
        prefix_length: int,
        suffix_lengths: Sequence[int],
        places: Sequence[int],
        rows: Sequence[Tokens],
    ) -> torch.Tensor:
        """Hidden states of ``rows``, each continuing row ``places[i]`` of a suffix pass whose real suffix has
        ``suffix_lengths[i]`` tokens.

        Exact, not approximate: a row's tokens take the positions they have in the request alone (prefix + its
        suffix + their place), so rotary and learned position embeddings see the request's own positions; the
        cache slots of its item's padding (after its suffix, up to the pass's longest) are masked out, so softmax
        gives them weight exactly 0 and each token attends to the same keys at the same positions as in the
        request alone. What may differ is float summation order, as between any two batch shapes. The causal part
        of the mask counts cache slots, which are at least the positions: plan_family keeps the padded length under
        a sliding window, so that the window hides nothing."""
        cache = _fork(suffix_cache)
        cache.batch_select_indices(torch.tensor(list(places), device=self.device))
        cached = cache.get_seq_length()
        tokens = self._ids(rows)
        mask = torch.ones(len(rows), cached + tokens.shape[1], dtype=torch.long, device=self.device)
        for row, length in enumerate(suffix_lengths):
            mask[row, prefix_length + length : cached] = 0
        starts = torch.tensor([prefix_length + length for length in suffix_lengths], device=self.device)
        positions = starts[:, None] + torch.arange(tokens.shape[1], device=self.device)
        return self._encode(tokens, cache, attention_mask=mask, position_ids=positions).last_hidden_state

    def _read_head(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each position's log-probability of its target token and its most likely token, the vocabulary-wide
        logits made ``HEAD_ROWS`` positions at a time (an item with many long choices stays within memory)."""
        log_probs, greedy = [], []
        for start in range(0, len(hidden), HEAD_ROWS):
            logits = self._head(hidden[start : start + HEAD_ROWS])
            # lm-eval's own log_softmax (logit - logsumexp sums in another order: up to 1e-3 apart over a
            # continuation of Gemma's 262k-token vocabulary), read at each target; its argmax is lm-eval's check
            rows = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            log_probs.append(rows.gather(1, targets[start : start + HEAD_ROWS, None])[:, 0])
            greedy.append(rows.argmax(dim=-1))
        return torch.cat(log_probs), torch.cat(greedy)

    # -- model pieces -------------------------------------------------------------------------------------------

    def _encode(self, input_ids: torch.Tensor, cache, **masking: torch.Tensor):
        """The backbone on ``input_ids``, continuing ``cache`` (None: from the start), with ``attention_mask`` and
        ``position_ids`` where given; returns hidden states and the grown cache as ``.last_hidden_state`` and
        ``.cache``."""
        decoder = backbone(self.model)
        keyword = _cache_keyword(decoder)
        output = decoder(input_ids=input_ids, use_cache=True, **{keyword: cache}, **masking)
        return _Encoded(output.last_hidden_state, getattr(output, keyword))

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's own output module (peft's LoRA wrapper where the adapter targets it), then the final logit
        soft-capping where the config has it (Gemma 2/3's forward applies it after the head)."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _ids(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        width = max(len(row) for row in rows)
        padded = [list(row) + [0] * (width - len(row)) for row in rows]
        return torch.tensor(padded, dtype=torch.long, device=self.device)

    def _batch_limits(self) -> BatchLimits:
        """Suffix passes as wide as row passes; a choice pass takes up to ``CHOICES_PER_ITEM`` rows per item (they are
        short: a last context token and a continuation); padded requests stay under the sliding window."""
        rows = self._rows_per_forward()
        return BatchLimits(items=rows, choice_rows=CHOICES_PER_ITEM * rows, padded_input=self._sliding_window())

    def _rows_per_forward(self) -> int:
        """At least ``MIN_ROWS`` rows share a forward, also at batch size 1: rows continuing one cache are short
        (a context's rest and a continuation), far less memory than the full sequences lm-eval runs per row."""
        return max(self.batch_size if isinstance(self.batch_size, int) else AUTO_BATCH_ROWS, MIN_ROWS)

    @contextlib.contextmanager
    def _inference(self):
        """No gradients and lm-eval's own mixed-precision setting, as its ``_model_call`` runs the model."""
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            yield


@dataclass(frozen=True)
class _Encoded:
    last_hidden_state: torch.Tensor
    cache: object


def _cache_keyword(decoder) -> str | None:
    """The backbone's KV-cache argument: ``cache`` (transformers 5) or ``past_key_values`` (earlier)."""
    parameters = inspect.signature(decoder.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _repeated(cache, count: int):
    """A copy of ``cache`` repeated ``count`` times along the batch (None stays None: a pass from the start)."""
    forked = _fork(cache)
    if forked is not None:
        forked.batch_repeat_interleave(count)
    return forked


def _fork(cache):
    """A cache that can grow without changing ``cache``: dynamic cache layers grow by concatenation into new
    tensors (never in place), so copies of the layer objects that share the tensors are independent."""
    if cache is None:
        return None
    forked = copy.copy(cache)
    forked.layers = [copy.copy(layer) for layer in cache.layers]
    return forked
