"""Generate the afp_pawsx per-language tasks, groups and demonstration-language variants.

Run from the repository root: ``python tasks/afp_pawsx/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import data_spec, language_family, write_family

LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")


def split(language: str, role: str) -> dict:
    """Test on PAWS-X test; demonstrations from the dev set (hub: validation), as in the paper."""
    hub_split, file_split = ("test", "test") if role == "test" else ("validation", "dev")
    return data_spec("google-research-datasets/paws-x", language, hub_split, f"pawsx/{language}_{file_split}.tsv")


def configs() -> dict:
    """``afp_pawsx_{lang}``: English dev demonstrations for every test language, as the released official config
    (``data/config/pawsx_en-zh_seed0.json``, ``prompt_languages: [en, en]``)."""
    return language_family("afp_pawsx", LANGUAGES, split, data={"fields": ["sentence1", "sentence2", "label"]})


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
