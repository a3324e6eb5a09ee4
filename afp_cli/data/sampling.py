"""Sample AFP examples (an MCL translation pair + a CIT text) the way the paper's data generator does, one at a time.

Semantics follow src/generate_sup_data.py of the official code (chongli17/CrossLingualAlignment):
- bilingual: source language uniform; with ``cross_prob`` the answer is in the other language. MCL pairs are the
  aligned instructions (pivot, other), walked through in a shuffled order that is reshuffled when used up.
- multilingual: a non-pivot language ``other`` is drawn uniformly; with 1 - ``cross_prob`` the example is
  monolingual in a uniformly drawn language, else other->pivot with ``change_prob``, else pivot->other. The MCL
  pair is drawn at random among the pivot<->``other`` pairs.
- translation: the direction is swapped with ``change_prob``; the template is drawn uniformly.
The number of examples is ``int(repeat * N)`` for N usable source records. Deviations, on purpose: records are
used epoch by epoch (each a fresh permutation), so each is used floor(repeat) or ceil(repeat) times and memory
does not grow with ``repeat``; the official also emits one example more than ``int(repeat * N)`` and shuffles
the whole list again at the end, which needs it all in memory and adds nothing to an already random order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from afp_cli.data.mixture_config import MixturePart, Template
from afp_cli.data.readers import InstructionRecord, find_instruction_file, read_instructions, read_parallel
from afp_cli.errors import AfpError, located
from afp_cli.languages import language_name

_SHOWN_IDS = 5  # how many offending ids an alignment error lists


@dataclass
class InputCounts:
    """What the builder read, skipped and dropped: known only at build time, kept in the mixture's meta file."""

    records: dict[str, int] = field(default_factory=dict)  # per language (or "pairs" for parallel text)
    usable: int = 0
    empty_skipped: int = 0  # records or pairs with an empty instruction/output or an empty side
    duplicates_dropped: int = 0  # MCL pairs (or parallel pairs) identical to an earlier one
    untranslated_skipped: int = 0  # instruction pairs identical in both languages: no signal for MCL
    mcl_pairs_available: dict[str, int] = field(default_factory=dict)


@dataclass
class PartExamples:
    """The examples of one built part, generated lazily: iterate ``examples`` once; ``counts`` is final as soon as it
    is built."""

    counts: InputCounts
    total: int
    examples: Iterator[dict]


def epoch_order(rng: random.Random, size: int, total: int) -> Iterator[int]:
    """``total`` indices into ``size`` records: one fresh permutation per epoch, the last epoch cut short."""
    produced = 0
    while produced < total:
        order = list(range(size))
        rng.shuffle(order)
        yield from order[: total - produced]
        produced += min(size, total - produced)


def example_count(repeat: float, usable: int, unit: str) -> int:
    """``int(repeat * usable)``, the official count; zero examples is an error, not an empty file."""
    total = int(repeat * usable)
    if total < 1:
        raise AfpError(f"--repeat: {repeat} x {usable} usable {unit} gives no example; raise --repeat")
    return total


def build_examples(config: MixturePart) -> PartExamples:
    if config.mode == "translation":
        return _translation_mixture(config)
    return _instruction_mixture(config)


# ----------------------------------------------------------------------------------------------- instruction modes


def load_aligned(
    folder: Path, languages: list[str], counts: InputCounts
) -> tuple[list[str], dict[str, dict[str, InstructionRecord]]]:
    """Read each language's file, check ids are unique and identical across languages, drop records with empty parts.

    Returns the usable ids in a stable order and ``table[lang][id]``.
    """
    table: dict[str, dict[str, InstructionRecord]] = {}
    paths = {}
    for lang in languages:
        paths[lang] = find_instruction_file(folder, lang)
        records: dict[str, InstructionRecord] = {}
        for record in read_instructions(paths[lang]):
            if record.id in records:
                first = records[record.id].line
                raise located(paths[lang], record.line, "id", f"duplicate id '{record.id}' (first at line {first})")
            records[record.id] = record
        table[lang] = records
        counts.records[lang] = len(records)
    pivot = languages[0]
    for lang in languages[1:]:
        _check_alignment(paths[pivot], table[pivot], paths[lang], table[lang])
    empty = {
        record_id
        for records in table.values()
        for record_id, record in records.items()
        if not record.instruction or not record.output
    }
    counts.empty_skipped = len(empty)
    ids = sorted((record_id for record_id in table[pivot] if record_id not in empty), key=_id_order)
    counts.usable = len(ids)
    if not ids:
        raise AfpError(
            f"{paths[pivot]}: no usable records (all {len(table[pivot])} have an empty instruction or output)"
        )
    return ids, table


def _id_order(record_id: str) -> tuple[int, int, str]:
    # Numeric ids in numeric order (2 before 10); other ids after them, as text.
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


def _check_alignment(pivot_path: Path, pivot: dict, other_path: Path, other: dict) -> None:
    only_here = sorted(set(other) - set(pivot), key=lambda key: other[key].line)
    missing = sorted(set(pivot) - set(other), key=lambda key: pivot[key].line)
    if not only_here and not missing:
        return
    if only_here:
        where, line = other_path, other[only_here[0]].line
    else:
        where, line = pivot_path, pivot[missing[0]].line
    shown = ", ".join(repr(record_id) for record_id in (only_here + missing)[:_SHOWN_IDS])
    raise located(
        where,
        line,
        "id",
        f"{len(only_here) + len(missing)} ids do not align between {pivot_path.name} and {other_path.name} "
        f"({len(only_here)} only in {other_path.name}, {len(missing)} missing from it; first: {shown})",
    )


def mcl_pairs(
    ids: list[str], pivot: dict[str, InstructionRecord], other: dict[str, InstructionRecord], counts: InputCounts
) -> list[tuple[str, str, str]]:
    """(pivot instruction, translated instruction, id), without untranslated or repeated pairs."""
    seen: set[tuple[str, str]] = set()
    pairs = []
    for record_id in ids:
        pair = (pivot[record_id].instruction, other[record_id].instruction)
        if pair[0] == pair[1]:
            counts.untranslated_skipped += 1
        elif pair in seen:
            counts.duplicates_dropped += 1
        else:
            seen.add(pair)
            pairs.append((*pair, record_id))
    return pairs


class _Cycle:
    """Hand out items in a shuffled order, reshuffling each time all were used (official bilingual MCL pairs)."""

    def __init__(self, items: list, rng: random.Random) -> None:
        self.items, self.rng, self.position = list(items), rng, 0
        self.rng.shuffle(self.items)

    def next(self):
        item = self.items[self.position]
        self.position += 1
        if self.position == len(self.items):
            self.rng.shuffle(self.items)
            self.position = 0
        return item


def _instruction_mixture(config: MixturePart) -> PartExamples:
    counts = InputCounts()
    languages = config.languages
    pivot, others = languages[0], languages[1:]
    ids, table = load_aligned(config.source_path, languages, counts)
    pools = {other: mcl_pairs(ids, table[pivot], table[other], counts) for other in others}
    for other, pool in pools.items():
        counts.mcl_pairs_available[f"{pivot}-{other}"] = len(pool)
        if not pool:
            raise AfpError(f"{config.source_path}: no translated instruction pairs {pivot}-{other} for MCL")
    total = example_count(config.repeat, len(ids), "records")
    with_input, without_input = config.instruction_templates()
    rng = random.Random(config.seed)
    bilingual = config.mode == "bilingual"
    cycle = _Cycle(pools[others[0]], rng) if bilingual else None

    def generate() -> Iterator[dict]:
        for index in epoch_order(rng, len(ids), total):
            if bilingual:
                source = rng.choice(languages)
                target = (
                    rng.choice([lang for lang in languages if lang != source])
                    if rng.random() < config.cross_prob
                    else source
                )
                other, pair = others[0], cycle.next()
            else:
                source, target, other = _multilingual_direction(rng, languages, config.cross_prob, config.change_prob)
                pair = rng.choice(pools[other])
            question, answer = table[source][ids[index]], table[target][ids[index]].output
            template = with_input if question.input else without_input
            prompt = template.prompt(
                instruction=question.instruction, input=question.input, language=language_name(target)
            )
            yield _example(config, pair[0], pair[1], prompt, answer, source, target, ids[index], (pivot, other))

    return PartExamples(counts, total, generate())


def _multilingual_direction(
    rng: random.Random, languages: list[str], cross_prob: float, change_prob: float
) -> tuple[str, str, str]:
    """(source, target, the non-pivot language of the MCL pair), official ``build_crosslingual`` order of draws."""
    pivot = languages[0]
    other = rng.choice(languages[1:])
    if rng.random() >= cross_prob:
        monolingual = rng.choice(languages)
        return monolingual, monolingual, other
    if rng.random() < change_prob:
        return other, pivot, other
    return pivot, other, other


# ----------------------------------------------------------------------------------------------- translation mode


def _translation_mixture(config: MixturePart) -> PartExamples:
    counts = InputCounts()
    source_lang, target_lang = config.languages
    seen: set[tuple[str, str]] = set()
    pairs = []
    for pair in read_parallel(config.source_path, source_lang, target_lang):
        counts.records["pairs"] = counts.records.get("pairs", 0) + 1
        if not pair.source or not pair.target:
            counts.empty_skipped += 1
        elif (pair.source, pair.target) in seen:
            counts.duplicates_dropped += 1
        else:
            seen.add((pair.source, pair.target))
            pairs.append(pair)
    del seen
    counts.usable = len(pairs)
    counts.mcl_pairs_available[f"{source_lang}-{target_lang}"] = len(pairs)
    if not pairs:
        raise AfpError(f"{config.source_path}: no usable translation pairs")
    total = example_count(config.repeat, len(pairs), "pairs")
    templates: list[Template] = config.translation_template_list()
    rng = random.Random(config.seed)

    def generate() -> Iterator[dict]:
        for index in epoch_order(rng, len(pairs), total):
            pair = pairs[index]
            source, target, text, translation = source_lang, target_lang, pair.source, pair.target
            if rng.random() < config.change_prob:
                source, target, text, translation = target, source, translation, text
            prompt = rng.choice(templates).prompt(input=text, language=language_name(target))
            yield _example(config, text, translation, prompt, translation, source, target, pair.id, (source, target))

    return PartExamples(counts, total, generate())


def _example(
    config: MixturePart,
    sent0: str,
    sent1: str,
    prompt: str,
    answer: str,
    source: str,
    target: str,
    record_id: str,
    pair_languages: tuple[str, str],
) -> dict:
    """The official four fields first (their order is what the official trainer reads), then the audit fields."""
    example = {"sent0": sent0, "sent1": sent1, "clm_text": prompt + answer, "clm_prompt_len": len(prompt)}
    if config.audit_fields:
        example.update(
            src_lang=source, tgt_lang=target, id=record_id, sent0_lang=pair_languages[0], sent1_lang=pair_languages[1]
        )
    return example


# ----------------------------------------------------------------------------------------------- mixing parts


def interleave(mixtures: list[PartExamples], names: list[str], seed: int, label_parts: bool) -> Iterator[dict]:
    """All examples of all parts in a uniformly random interleaving, streamed.

    The official file is ``cat part1 part2 | shuf``. Each part's stream is already in random order, so drawing the
    next example from part i with probability (examples left in i) / (examples left in all) gives the same
    distribution as shuffling the concatenation, without holding it in memory. With ``label_parts`` each example
    names its part (``part``), so `afp data stats` can count them.
    """
    if len(mixtures) == 1:  # one part: exactly its own build, byte for byte
        yield from mixtures[0].examples
        return
    rng = random.Random(f"afp-mix:{seed}")  # a stream of its own: parts draw from theirs
    left = [mixture.total for mixture in mixtures]
    while (remaining := sum(left)) > 0:
        draw = rng.randrange(remaining)
        index = 0
        while draw >= left[index]:
            draw -= left[index]
            index += 1
        left[index] -= 1
        example = next(mixtures[index].examples)
        if label_parts:
            example["part"] = names[index]
        yield example
