"""Split the Tatoeba en–zh file into the experiment's disjoint parts and write each in the form its consumer reads.

Parts (after a fixed, seeded shuffle and de-duplication, so no sentence of one part reappears in another):
  pretrain_en  English side only: monolingual pre-training text
  pretrain_zh  Chinese side only, of *other* pairs: monolingual pre-training text
  align        translation pairs for `afp align` (through `afp data translation`)
  dev          a few pairs: the demonstrations of the 1-shot FLORES-layout evaluation
  held_out     the test pairs: retrieval, translation quality, language rate, held-out CIT loss
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

SPLIT_SEED = 0  # the parts never change with the experiment's seeds: only training randomness does


@dataclass(frozen=True)
class PartSizes:
    pretrain_en: int
    pretrain_zh: int
    align: int
    dev: int
    held_out: int


@dataclass
class Parts:
    pretrain_en: list[tuple[str, str]]
    pretrain_zh: list[tuple[str, str]]
    align: list[tuple[str, str]]
    dev: list[tuple[str, str]]
    held_out: list[tuple[str, str]]

    def pretraining_texts(self) -> list[str]:
        """English sentences of one part and Chinese sentences of another: never a translation pair."""
        return [en for en, _ in self.pretrain_en] + [zh for _, zh in self.pretrain_zh]


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The TSV's (en, zh) rows in file order, without its header."""
    if not path.is_file():
        raise SystemExit(f"{path}: parallel file not found (pass --parallel PATH to an en<TAB>zh TSV)")
    pairs = []
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[:2] != ["en", "zh"]:
            raise SystemExit(f"{path}:1: expected the header 'en<TAB>zh', got {header!r}")
        for line in handle:
            columns = line.rstrip("\n").split("\t")
            if len(columns) >= 2 and columns[0].strip() and columns[1].strip():
                pairs.append((columns[0].strip(), columns[1].strip()))
    return pairs


def split_parts(pairs: list[tuple[str, str]], sizes: PartSizes) -> Parts:
    """Seeded shuffle, then drop any pair that repeats an English or Chinese sentence already taken, then cut."""
    shuffled = list(pairs)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    seen_en, seen_zh, unique = set(), set(), []
    for en, zh in shuffled:
        if en in seen_en or zh in seen_zh:
            continue
        seen_en.add(en)
        seen_zh.add(zh)
        unique.append((en, zh))
    wanted = [sizes.held_out, sizes.dev, sizes.align, sizes.pretrain_en, sizes.pretrain_zh]
    if sum(wanted) > len(unique):
        raise SystemExit(f"the parts need {sum(wanted)} distinct pairs, the file has {len(unique)}")
    cuts, start = [], 0
    for size in wanted:
        cuts.append(unique[start : start + size])
        start += size
    held_out, dev, align, pretrain_en, pretrain_zh = cuts
    return Parts(pretrain_en, pretrain_zh, align, dev, held_out)


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("en\tzh\n" + "".join(f"{en}\t{zh}\n" for en, zh in pairs), encoding="utf-8")
    return path


def write_flores_layout(folder: Path, dev: list[tuple[str, str]], devtest: list[tuple[str, str]]) -> Path:
    """``folder/flores/{dev,devtest}/{eng_Latn,zho_Hans}.{split}``, line i of each file aligned (what
    `afp evaluate --data-dir folder` reads for the afp_flores tasks)."""
    for split, pairs in (("dev", dev), ("devtest", devtest)):
        target = folder / "flores" / split
        target.mkdir(parents=True, exist_ok=True)
        for index, code in enumerate(("eng_Latn", "zho_Hans")):
            (target / f"{code}.{split}").write_text("".join(pair[index] + "\n" for pair in pairs), encoding="utf-8")
    return folder
