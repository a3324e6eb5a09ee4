"""Tokenised training set, its held-out split, the seeded example order, and collation into padded or packed batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from afp_cli.data.packing import PackedRows, bucket_width, fill_rows, pack
from afp_cli.data.tokenize import IGNORE_INDEX, encode_instruction, encode_sentences
from afp_cli.data.training_records import TrainingExample


@dataclass
class TokenizedExample:
    sentences: list[list[int]]  # [sent0, sent1] or [sent0, sent1, hard negative]; empty when MCL is off
    instruction_ids: list[int] = field(default_factory=list)  # empty when CIT is off
    instruction_labels: list[int] = field(default_factory=list)


@dataclass
class TokenCounts:
    sentence_tokens: int = 0
    instruction_tokens: int = 0
    target_tokens: int = 0
    truncated_sentences: int = 0
    truncated_instructions: int = 0


def tokenize_examples(
    examples: list[TrainingExample],
    tokenizer,
    max_length: int,
    with_pairs: bool,
    with_instructions: bool,
    learn_prompt: bool,
    append_eos: bool,
) -> tuple[list[TokenizedExample], TokenCounts]:
    counts = TokenCounts()
    sentence_ids: list[list[list[int]]] = [[] for _ in examples]
    if with_pairs:
        columns = [[example.sent0 for example in examples], [example.sent1 for example in examples]]
        if examples[0].hard_negative is not None:
            columns.append([example.hard_negative for example in examples])
        for column in columns:
            ids, truncated = encode_sentences(tokenizer, column, max_length)
            counts.truncated_sentences += truncated
            for row, sentence in zip(sentence_ids, ids):
                row.append(sentence)
                counts.sentence_tokens += len(sentence)
    tokenized = []
    for example, sentences in zip(examples, sentence_ids):
        item = TokenizedExample(sentences)
        if with_instructions:
            encoded = encode_instruction(
                tokenizer, example.clm_text, example.clm_prompt_len, max_length, learn_prompt, append_eos
            )
            item.instruction_ids, item.instruction_labels = encoded.input_ids, encoded.labels
            counts.instruction_tokens += len(encoded.input_ids)
            counts.target_tokens += sum(label != IGNORE_INDEX for label in encoded.labels)
            counts.truncated_instructions += encoded.truncated
        tokenized.append(item)
    return tokenized, counts


def split_held_out(count: int, held_out: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of example indices into (train, held-out)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


def micro_batch_indices(micro_batch: int, batch_size: int, train_size: int, seed: int) -> list[int]:
    """Example indices of the ``micro_batch``-th micro-batch: stateless, so resuming needs only the step number.

    Examples come from a stream of per-epoch permutations (seeded by ``seed`` and the epoch); a micro-batch may
    straddle two epochs, so no example is ever dropped.
    """
    start = micro_batch * batch_size
    indices = []
    permutations: dict[int, list[int]] = {}
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, train_size)
        if epoch not in permutations:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            permutations[epoch] = torch.randperm(train_size, generator=generator).tolist()
        indices.append(permutations[epoch][offset])
    return indices


@dataclass
class Batch:
    """The tensors of one micro-batch: right-padded (one text a row), or packed (several texts a row).

    Padded: the masks mark the real tokens and the packings are None. Packed (``data.packing``): the masks are None,
    each ``*_packing`` says where every text lies, and its ``position_ids`` restart per text, which is what
    confines attention to each text (afp_cli/data/packing.py); a model gets either a mask or those position ids.
    """

    sentence_ids: torch.Tensor | None  # texts in order: all sent0, then all sent1, [then hard negatives]
    sentence_mask: torch.Tensor | None
    sentences_per_example: int
    instruction_ids: torch.Tensor | None
    instruction_mask: torch.Tensor | None
    instruction_labels: torch.Tensor | None
    sentence_packing: PackedRows | None = None
    instruction_packing: PackedRows | None = None

    def to(self, device) -> Batch:
        def move(tensor):
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return Batch(
            move(self.sentence_ids),
            move(self.sentence_mask),
            self.sentences_per_example,
            move(self.instruction_ids),
            move(self.instruction_mask),
            move(self.instruction_labels),
            move(self.sentence_packing),
            move(self.instruction_packing),
        )

    @property
    def token_count(self) -> int:
        """Real tokens of the batch's sentences and instruction texts: padding is never counted."""
        total = 0
        for mask, packing in (
            (self.sentence_mask, self.sentence_packing),
            (self.instruction_mask, self.instruction_packing),
        ):
            if packing is not None:
                total += packing.token_count
            elif mask is not None:
                total += int(mask.sum())
        return total

    @property
    def position_count(self) -> int:
        """Positions the model computes, padding included (``token_count`` / this = the share of useful work)."""
        return sum(ids.numel() for ids in (self.sentence_ids, self.instruction_ids) if ids is not None)


def _pad(rows: list[list[int]], value: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(len(row) for row in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return ids, mask


def collate(
    examples: list[TokenizedExample],
    pad_token_id: int,
    packing: bool = False,
    bucket: bool = False,
    max_width: int | None = None,
) -> Batch:
    """One tensor for all sentences of the batch (a single MCL forward), one for the instruction texts.

    Args:
        packing: pack the texts (several a row, afp_cli/data/packing.py) instead of one a row.
        bucket: round the width up with :func:`bucket_width` (compiled blocks: few distinct shapes).
        max_width: packed rows' widest width (``data.max_length``; default: the longest text).
    """

    def width(texts: list[list[int]]) -> int | None:
        return bucket_width(max(len(text) for text in texts)) if bucket else None

    sentence_ids = sentence_mask = sentence_packing = None
    per_example = len(examples[0].sentences)
    if per_example:
        rows = [example.sentences[column] for column in range(per_example) for example in examples]
        if packing:
            sentence_ids, sentence_packing = pack(rows, pad_token_id, max_width, bucket)
        else:
            sentence_ids, sentence_mask = _pad(rows, pad_token_id, width(rows))
    instruction_ids = instruction_mask = instruction_labels = instruction_packing = None
    if examples[0].instruction_ids:
        texts = [example.instruction_ids for example in examples]
        labels = [example.instruction_labels for example in examples]
        if packing:
            instruction_ids, instruction_packing = pack(texts, pad_token_id, max_width, bucket)
            instruction_labels = fill_rows(labels, instruction_packing, IGNORE_INDEX, first_value=IGNORE_INDEX)
        else:
            instruction_ids, instruction_mask = _pad(texts, pad_token_id, width(texts))
            instruction_labels, _ = _pad(labels, IGNORE_INDEX, width(texts))
    return Batch(
        sentence_ids,
        sentence_mask,
        per_example,
        instruction_ids,
        instruction_mask,
        instruction_labels,
        sentence_packing,
        instruction_packing,
    )
