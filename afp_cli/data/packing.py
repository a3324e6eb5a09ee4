"""Padding-free batches: the texts of a micro-batch placed end to end in a few rows, positions restarting per text.

A padded batch gives every text a row as wide as the longest one; Tatoeba-like data (sentences of 10–30 tokens, a
few of 100) then spends much of its compute on padding. A packed batch fills a few rows with several texts each
(first-fit decreasing), and gives each text ``position_ids`` that start again at 0. transformers reads such
position ids, with no padding mask, as packed sequences: each text attends only to itself (a block-diagonal causal
mask with SDPA/eager, varlen kernels with flash-attention), so every token sees exactly what it sees in the padded
batch. Not every architecture honours
this (XGLM, OPT and BLOOM compute positions or ALiBi without the position ids): afp_cli/align/step_speed.py
checks the model before packing is used.

The rest of a row after its last text is padding with positions of its own (0, 1, ...): a separate "sequence"
that no real token attends to. Rows are as wide as ``data.max_length`` allows (cut to what they hold), so short
texts of similar lengths still share rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def bucket_width(length: int) -> int:
    """``length`` rounded up to one of few widths (8, 16, 32, 64, then multiples of 64), so shapes repeat.

    Compiled blocks are specialised on their input shapes; bucketing bounds how many different shapes a run
    produces (a 512-token maximum gives at most 12), whatever the lengths in the data.
    """
    if length <= 64:
        return max(8, 1 << (max(length, 1) - 1).bit_length())
    return -(-length // 64) * 64


@dataclass
class PackedRows:
    """Where each text of a packed tensor lies, in the texts' original order.

    ``rows[i]``, ``starts[i]`` and ``lengths[i]`` give text i's row, first column and token count; ``position_ids``
    ``(rows, width)`` restarts at every text (and at the padding that ends a row).
    """

    position_ids: torch.Tensor
    rows: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    longest: int  # the longest text, kept as a number so unpacking needs no device synchronisation

    def to(self, device, non_blocking: bool = False) -> PackedRows:
        return PackedRows(
            *(
                tensor.to(device, non_blocking=non_blocking)
                for tensor in (self.position_ids, self.rows, self.starts, self.lengths)
            ),
            self.longest,
        )

    @property
    def token_count(self) -> int:
        """Real tokens (padding excluded)."""
        return int(self.lengths.sum())

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, width, ...)`` → ``(texts, longest, ...)`` with each text from column 0, and its padding mask.

        What a right-padded batch of the same texts holds at the real tokens (pooling then treats both alike).
        """
        offsets = torch.arange(self.longest, device=packed.device)
        real = offsets < self.lengths[:, None]
        # padding positions read the text's first token: in bounds, and masked out by ``real``
        columns = self.starts[:, None] + torch.where(real, offsets, 0)
        return packed[self.rows[:, None], columns], real.long()


def _first_fit_decreasing(lengths: list[int], width: int) -> tuple[list[int], list[int], list[int]]:
    """Each text's row and start column, and each row's fill, placing the longest texts first."""
    # equal lengths keep their order, so the layout is a pure function of the lengths
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    fill: list[int] = []
    row_of, start_of = [0] * len(lengths), [0] * len(lengths)
    for index in order:
        row = next((row for row, used in enumerate(fill) if used + lengths[index] <= width), None)
        if row is None:
            row = len(fill)
            fill.append(0)
        row_of[index], start_of[index] = row, fill[row]
        fill[row] += lengths[index]
    return row_of, start_of, fill


def plan_rows(lengths: list[int], max_width: int | None = None, bucket: bool = False) -> PackedRows:
    """The layout of texts of these lengths in as few padded positions as rows of at most ``max_width`` allow.

    Rows are at most ``max_width`` wide (default: the longest text; never less), as TRL packs to ``max_length``.
    A few widths are tried: the widest, and even shares of the total over the rows that takes (a batch of 800
    tokens in rows of at most 512 fits two rows of about 400, not 512 + 288), and the rows are cut to the fullest
    one; the layout with the fewest positions wins (then the narrower).

    Args:
        bucket: round the width up with :func:`bucket_width` (compiled blocks: few distinct shapes), and fill
            rows up to that rounded width.
    """
    longest, total = max(lengths), sum(lengths)
    limit = max(longest, max_width or longest)
    if bucket:  # the row gets that wide anyway: let it hold what fits
        limit = bucket_width(limit)
    widest = _first_fit_decreasing(lengths, limit)
    even_share = -(-total // len(widest[2]))
    step = max(1, longest // 4)
    candidates = sorted({min(limit, max(longest, even_share + k * step)) for k in range(4)} | {limit})
    best = None
    for candidate in candidates:
        row_of, start_of, fill = widest if candidate == limit else _first_fit_decreasing(lengths, candidate)
        width = bucket_width(max(fill)) if bucket else max(fill)
        if best is None or len(fill) * width < best[0]:
            best = (len(fill) * width, width, row_of, start_of, fill)
    _, width, row_of, start_of, fill = best
    position_ids = torch.zeros((len(fill), width), dtype=torch.long)
    for row, start, length in zip(row_of, start_of, lengths):
        position_ids[row, start : start + length] = torch.arange(length)
    for row, used in enumerate(fill):
        position_ids[row, used:] = torch.arange(width - used)
    return PackedRows(position_ids, torch.tensor(row_of), torch.tensor(start_of), torch.tensor(lengths), longest)


def fill_rows(
    texts: list[list[int]], layout: PackedRows, pad_value: int, first_value: int | None = None
) -> torch.Tensor:
    """The ``(rows, width)`` values of ``texts`` placed as ``layout`` says, ``pad_value`` elsewhere.

    Args:
        first_value: if given, what replaces each text's first value (labels: the last token of the text before
            in the row must not learn to predict the first token of the next one; in a padded row no token
            predicts the first one either).
    """
    values = torch.full(tuple(layout.position_ids.shape), pad_value, dtype=torch.long)
    for text, row, start in zip(texts, layout.rows.tolist(), layout.starts.tolist()):
        values[row, start : start + len(text)] = torch.tensor(text, dtype=torch.long)
        if first_value is not None and text:
            values[row, start] = first_value
    return values


def pack(
    texts: list[list[int]], pad_value: int, max_width: int | None = None, bucket: bool = False
) -> tuple[torch.Tensor, PackedRows]:
    """``texts`` packed into rows (:func:`plan_rows`): their ``(rows, width)`` values and the layout."""
    layout = plan_rows([len(text) for text in texts], max_width, bucket)
    return fill_rows(texts, layout, pad_value), layout
