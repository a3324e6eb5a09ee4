"""Generate the afp_xcopa per-language tasks (XCOPA's 11 languages plus English COPA), groups and variants.

Run from the repository root: ``python tasks/afp_xcopa/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import data_spec, language_family, write_family

LANGUAGES = ("en", "et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")


def split(language: str, role: str) -> dict:
    """XCOPA: test on test, demonstrations from validation. English is COPA (SuperGLUE), whose test labels are
    hidden: test on its validation set, demonstrations from its train set."""
    if language == "en":
        hub_split, file_split = ("validation", "val") if role == "test" else ("train", "train")
        return data_spec("aps/super_glue", "copa", hub_split, f"xcopa/en_{file_split}.jsonl")
    hub_split, file_split = ("test", "test") if role == "test" else ("validation", "val")
    return data_spec("cambridgeltl/xcopa", language, hub_split, f"xcopa/{language}_{file_split}.jsonl")


def configs() -> dict:
    """English demonstrations by default (COPA train), as for PAWS-X; no XCOPA config was released."""
    return language_family(
        "afp_xcopa", LANGUAGES, split, data={"fields": ["premise", "choice1", "choice2", "question", "label"]}
    )


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
