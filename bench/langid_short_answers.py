"""How many letters does the language-rate detector need? Accuracy of afp's identifier on short answers, by length.

Takes sentences of known language (a TSV with a header of two language codes, e.g. Tatoeba en–zh), cuts each to its
first k letters (punctuation and spaces kept in between), and runs afp's LanguageIdentifier with every length
threshold off (min_letters 1) but its confidence and script checks on, as `afp analyze language-rate` does. Prints,
per language and k: share detected correctly, share undetermined, share wrong. Not a test: it asserts nothing.

  python bench/langid_short_answers.py ../shared/data/parallel/tatoeba_en-zh.tsv --sentences 1000
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def first_letters(text: str, count: int) -> str | None:
    """``text`` up to and including its ``count``-th letter; None when it has fewer letters."""
    seen = 0
    for position, character in enumerate(text):
        if character.isalpha():
            seen += 1
            if seen == count:
                return text[: position + 1]
    return None


def main() -> None:
    from afp_cli.analyze.language_id import UNDETERMINED, LanguageIdConfig, LanguageIdentifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--max-letters", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    lines = args.pairs.read_text(encoding="utf-8").splitlines()
    languages = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.sentences]
    identifier = LanguageIdentifier(languages, LanguageIdConfig(min_letters=1))
    print(
        f"{len(rows)} sentences per language from {args.pairs} (seed {args.seed}); detector: afp defaults, "
        f"min_letters off"
    )
    print(f"{'language':<9}{'letters':>8}{'correct':>9}{'undetermined':>14}{'wrong':>8}")
    for column, language in enumerate(languages):
        for count in range(1, args.max_letters + 1):
            texts = [cut for row in rows if (cut := first_letters(row[column], count)) is not None]
            detected = [identifier.detect(text) for text in texts]
            correct = sum(code == language for code in detected) / len(texts)
            undetermined = sum(code == UNDETERMINED for code in detected) / len(texts)
            print(f"{language:<9}{count:>8}{correct:>9.3f}{undetermined:>14.3f}{1 - correct - undetermined:>8.3f}")


if __name__ == "__main__":
    main()
