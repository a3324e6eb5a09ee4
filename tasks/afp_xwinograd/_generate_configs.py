"""Generate the afp_xwinograd per-language tasks, groups and demonstration-language variants.

Run from the repository root: ``python tasks/afp_xwinograd/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import language_family, write_family

LANGUAGES = ("en", "fr", "jp", "pt", "ru", "zh")  # XWinograd's own codes (Japanese is "jp")


def split(language: str, role: str) -> dict:
    """XWinograd has a test split only: demonstrations come from a test split too (English by default).

    Locally, the authors' release ``xwinograd/dataset.tsv`` (all languages in one file, read by
    ``utils.read_release``) or the hub's schema as JSON lines per language; exactly one may be present.
    """
    return {
        "hub_path": "Muennighoff/xwinograd",
        "hub_name": language,
        "hub_split": "test",
        "layouts": [
            {"local": "xwinograd/dataset.tsv", "reader": "xwinograd_release", "language": language},
            {"local": f"xwinograd/{language}_test.jsonl"},
        ],
    }


def configs() -> dict:
    return language_family(
        "afp_xwinograd", LANGUAGES, split, data={"fields": ["sentence", "option1", "option2", "answer"]}
    )


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
