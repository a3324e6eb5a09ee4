"""Describe a mixture: examples per direction, cross-lingual share, MCL pairs per language pair, length percentiles.

Fed one example at a time (while building, or reading a file back); lengths are kept as histograms, so memory
depends on the number of distinct lengths, not on the number of examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.data.readers import iter_json_objects
from afp_cli.errors import located
from afp_cli.report import markdown_table

PERCENTILES = (50, 90, 99)
CHAR_PARTS = ("clm_text", "prompt", "answer", "sent0", "sent1")
TOKEN_PARTS = ("clm_text", "sent0", "sent1")
UNKNOWN = "?"
_TOKENIZE_BATCH = 512


def percentiles(histogram: Counter) -> dict[str, float]:
    """Nearest-rank percentiles, mean and max of a {length: count} histogram."""
    total = sum(histogram.values())
    if not total:
        return {}
    summary: dict[str, float] = {}
    lengths = sorted(histogram)
    for percent in PERCENTILES:
        rank, seen = -(-percent * total // 100), 0  # ceil(p * n / 100): nearest rank
        for length in lengths:
            seen += histogram[length]
            if seen >= rank:
                summary[f"p{percent}"] = length
                break
    summary["max"] = lengths[-1]
    summary["mean"] = round(sum(length * count for length, count in histogram.items()) / total, 1)
    return summary


class TokenLengths:
    """Token-length histograms, tokenizing in batches (one call per batch is far faster than one per text)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.histograms = {part: Counter() for part in TOKEN_PARTS}
        self.pending: dict[str, list[str]] = {part: [] for part in TOKEN_PARTS}

    def add(self, example: dict) -> None:
        for part in TOKEN_PARTS:
            self.pending[part].append(example[part])
        if len(self.pending[TOKEN_PARTS[0]]) >= _TOKENIZE_BATCH:
            self.flush()

    def flush(self) -> None:
        for part, texts in self.pending.items():
            if texts:
                ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
                self.histograms[part].update(len(row) for row in ids)
                texts.clear()


@dataclass
class MixtureStats:
    examples: int = 0
    directions: Counter = field(default_factory=Counter)
    cross_lingual: int = 0
    mcl_pairs: Counter = field(default_factory=Counter)
    parts: Counter = field(default_factory=Counter)  # examples per part of a mix (the ``part`` audit field)
    chars: dict[str, Counter] = field(default_factory=lambda: {part: Counter() for part in CHAR_PARTS})
    tokens: TokenLengths | None = None

    def add(self, example: dict) -> None:
        self.examples += 1
        if "part" in example:
            self.parts[example["part"]] += 1
        source, target = example.get("src_lang", UNKNOWN), example.get("tgt_lang", UNKNOWN)
        self.directions[f"{source}→{target}"] += 1
        self.cross_lingual += source != target
        self.mcl_pairs[f"{example.get('sent0_lang', UNKNOWN)}-{example.get('sent1_lang', UNKNOWN)}"] += 1
        text, cut = example["clm_text"], example["clm_prompt_len"]
        lengths = {"clm_text": len(text), "prompt": cut, "answer": len(text) - cut}
        lengths.update(sent0=len(example["sent0"]), sent1=len(example["sent1"]))
        for part, length in lengths.items():
            self.chars[part][length] += 1
        if self.tokens is not None:
            self.tokens.add(example)

    def as_dict(self, inputs: dict | None = None) -> dict:
        known = UNKNOWN not in "".join(self.directions)
        report: dict[str, Any] = {
            "examples": self.examples,
            "directions": dict(self.directions.most_common()),
            "cross_lingual_share": round(self.cross_lingual / self.examples, 4) if known and self.examples else None,
            "mcl_pairs": dict(self.mcl_pairs.most_common()),
            **({"parts": dict(self.parts)} if self.parts else {}),
            "length_chars": {part: percentiles(histogram) for part, histogram in self.chars.items()},
        }
        if self.tokens is not None:
            self.tokens.flush()
            report["length_tokens"] = {part: percentiles(h) for part, h in self.tokens.histograms.items()}
        if inputs is not None:
            report["inputs"] = inputs
        return report


def read_mixture(path: Path) -> Iterator[dict]:
    """Examples of a mixture file, each checked for the four fields the aligner needs."""
    for line, example in iter_json_objects(path):
        check_example(path, line, example)
        yield example


def check_example(path: Path, line: int, example: Any) -> None:
    if not isinstance(example, dict):
        raise located(path, line, None, "expected a JSON object")
    for name in ("sent0", "sent1", "clm_text"):
        if name not in example:
            raise located(path, line, name, "missing")
        if not isinstance(example[name], str):
            raise located(path, line, name, "expected a string")
    cut = example.get("clm_prompt_len")
    if "clm_prompt_len" not in example:
        raise located(path, line, "clm_prompt_len", "missing")
    if isinstance(cut, bool) or not isinstance(cut, int) or not 0 <= cut <= len(example["clm_text"]):
        raise located(path, line, "clm_prompt_len", f"must be an integer in [0, len(clm_text)], got {cut!r}")


def render(report: dict) -> str:
    """The summary a person reads after a build or from `afp data stats`."""
    share = report["cross_lingual_share"]
    lines = [
        f"examples: {report['examples']}",
        f"cross-lingual share: {'unknown' if share is None else f'{share:.1%}'}",
    ]
    inputs = report.get("inputs")
    if inputs:
        # one part: its counts; a mix: the counts of each part by name
        per_part = {"": inputs} if "records" in inputs else {f"{name}: ": counts for name, counts in inputs.items()}
        for prefix, counts in per_part.items():
            read = ", ".join(f"{name} {count}" for name, count in counts["records"].items())
            lines.append(
                f"{prefix}inputs read: {read}; usable: {counts['usable']}; empty fields skipped: "
                f"{counts['empty_skipped']}; "
                f"duplicates dropped: {counts['duplicates_dropped']}; untranslated skipped: "
                f"{counts['untranslated_skipped']}"
            )
    lines.append("")
    if report.get("parts"):
        lines.append(
            markdown_table([{"part": k, "examples": v} for k, v in report["parts"].items()], ["part", "examples"])
        )
    lines.append(
        markdown_table(
            [{"direction": k, "examples": v} for k, v in report["directions"].items()], ["direction", "examples"]
        )
    )
    lines.append(
        markdown_table(
            [{"MCL pair": k, "examples": v} for k, v in report["mcl_pairs"].items()], ["MCL pair", "examples"]
        )
    )
    for unit in ("chars", "tokens"):
        lengths = report.get(f"length_{unit}")
        if lengths:
            columns = ["part", *(f"p{p}" for p in PERCENTILES), "max", "mean"]
            rows = [{"part": part, **summary} for part, summary in lengths.items()]
            lines.append(f"length in {unit}:\n" + markdown_table(rows, columns, digits=1))
    return "\n".join(lines)
