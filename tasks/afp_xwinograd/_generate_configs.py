"""Generate the afp_xwinograd per-language tasks, groups and demonstration-language variants.

Run from the repository root: ``python tasks/afp_xwinograd/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import data_spec, language_family, write_family

LANGUAGES = ("en", "fr", "jp", "pt", "ru", "zh")  # XWinograd's own codes (Japanese is "jp")


def split(language: str, role: str) -> dict:
    """XWinograd has a test split only: demonstrations come from a test split too (English by default)."""
    return data_spec("Muennighoff/xwinograd", language, "test", f"xwinograd/{language}_test.jsonl")


def configs() -> dict:
    return language_family(
        "afp_xwinograd", LANGUAGES, split, data={"fields": ["sentence", "option1", "option2", "answer"]}
    )


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
