"""Generate the afp_xnli per-language tasks, groups and cross-lingual demonstration variants.

Run from the repository root: ``python tasks/afp_xnli/_generate_configs.py``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import language_family, write_family

LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


def split(language: str, role: str) -> dict:
    """Test on XNLI test; demonstrations from the dev set (hub: validation), as in the paper.

    Locally, the hub schema as a TSV (``id premise hypothesis label``, how the published files are exported) or as
    JSON lines; exactly one of the two may be present (tasks/afp_task_common.py, "local layouts").
    """
    hub_split, file_split = ("test", "test") if role == "test" else ("validation", "dev")
    return {
        "hub_path": "facebook/xnli",
        "hub_name": language,
        "hub_split": hub_split,
        "layouts": [{"local": f"xnli/{language}_{file_split}.{suffix}"} for suffix in ("tsv", "jsonl")],
    }


DATA = {"label_names": ["entailment", "neutral", "contradiction"], "fields": ["premise", "hypothesis", "label"]}


def configs() -> dict:
    """``afp_xnli_{lang}`` (full-sentence prompt, English demonstrations) with its demonstration variants, and the
    question-style variant ``afp_xnli_qa_{lang}`` (group ``afp_xnli_qa``)."""
    return {
        **language_family("afp_xnli", LANGUAGES, split, data=DATA),
        **language_family("afp_xnli_qa", LANGUAGES, split, demo_languages=(), native_variant=False, data=DATA),
    }


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
