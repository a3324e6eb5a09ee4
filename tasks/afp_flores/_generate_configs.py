"""Generate afp_flores_{src}-{tgt} tasks for every direction between LANGUAGES, plus groups.

Run from the repository root: ``python tasks/afp_flores/_generate_configs.py`` (``--languages en zh ja`` makes
the directions between other languages; the committed files are the default set, which a test checks).
Groups: ``afp_flores`` (the paper's English<->Chinese pair), ``afp_flores_from_{code}`` and ``afp_flores_into_{code}``.
"""

from itertools import permutations

from afp_cli.evaluation.taskgen import data_spec, group_config, write_family_for_languages
from afp_cli.languages import get_language

LANGUAGES = ("en", "zh", "ar", "de", "es", "fr", "hi", "id", "ja", "ko", "ru", "sw", "th", "tr", "vi")
PAPER_DIRECTIONS = (("en", "zh"), ("zh", "en"))
HUB = "openlanguagedata/flores_plus"
# FLORES+ renamed a few FLORES-200 configs; local FLORES-200 folders keep the original file names.
FLORES_PLUS_NAMES = {"zho_Hans": "cmn_Hans"}


def bleu_tokenizer(code: str) -> str:
    """sacrebleu tokenizer by target language: zh, ja-mecab (char without MeCab), char for Thai, else 13a."""
    return {"zh": "zh", "ja": "ja-mecab", "th": "char"}.get(code, "13a")


def side(code: str, split: str) -> dict:
    flores = get_language(code).flores
    return data_spec(HUB, FLORES_PLUS_NAMES.get(flores, flores), split, f"flores/{split}/{flores}.{split}")


def task_name(source: str, target: str) -> str:
    return f"afp_flores_{get_language(source).flores}-{get_language(target).flores}"


def configs(languages: tuple[str, ...] = LANGUAGES) -> dict:
    files = {}
    for source, target in permutations(languages, 2):
        name = task_name(source, target)
        files[f"{name}.yaml"] = {
            "include": "_afp_flores_template_yaml",
            "task": name,
            "doc_to_text": f"{{{{source}}}} Translate into {get_language(target).name}:",
            "dataset_kwargs": {
                "splits": {
                    "test": {"source": side(source, "devtest"), "target": side(target, "devtest")},
                    "demos": {"source": side(source, "dev"), "target": side(target, "dev")},
                },
                "extra_fields": {"bleu_tokenizer": bleu_tokenizer(target)},
            },
        }
    metrics = ["bleu_target_tok", "chrfpp"]
    paper = [task_name(s, t) for s, t in PAPER_DIRECTIONS if s in languages and t in languages]
    files["_afp_flores.yaml"] = group_config("afp_flores", paper, metrics)
    for code in languages:
        flores = get_language(code).flores
        others = [other for other in languages if other != code]
        files[f"_afp_flores_from_{flores}.yaml"] = group_config(
            f"afp_flores_from_{flores}", [task_name(code, other) for other in others], metrics
        )
        files[f"_afp_flores_into_{flores}.yaml"] = group_config(
            f"afp_flores_into_{flores}", [task_name(other, code) for other in others], metrics
        )
    return files


if __name__ == "__main__":
    write_family_for_languages(__file__, __doc__.splitlines()[0], LANGUAGES, configs)
