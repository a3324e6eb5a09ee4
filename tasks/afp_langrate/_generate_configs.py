"""Generate afp_langrate_{src}-{tgt} tasks for every direction with English or Chinese on one side, plus a group.

Run from the repository root: ``python tasks/afp_langrate/_generate_configs.py`` (``--languages en zh ja`` makes
other directions; the committed files are the default set, which a test checks). Group: ``afp_langrate``, the
paper's two directions (en->zh, zh->en).
"""

from itertools import permutations

from afp_cli.evaluation.taskgen import group_config, write_family_for_languages
from afp_cli.languages import get_language

# The FLORES family's languages; directions pair each with English or Chinese (the paper's two languages).
LANGUAGES = ("en", "zh", "ar", "de", "es", "fr", "hi", "id", "ja", "ko", "ru", "sw", "th", "tr", "vi")
PIVOTS = ("en", "zh")
PAPER_DIRECTIONS = (("en", "zh"), ("zh", "en"))
DATA_FOLDER = "langrate"  # under the run's data_dir: langrate/{src}-{tgt}/{test,demos}.jsonl


def task_name(source: str, target: str) -> str:
    return f"afp_langrate_{source}-{target}"


def data_file(source: str, target: str, split: str) -> str:
    return f"{DATA_FOLDER}/{source}-{target}/{split}.jsonl"


def configs(languages: tuple[str, ...] = LANGUAGES) -> dict:
    files = {}
    for source, target in permutations(languages, 2):
        if source not in PIVOTS and target not in PIVOTS:
            continue
        name = task_name(source, target)
        files[f"{name}.yaml"] = {
            "include": "_afp_langrate_template_yaml",
            "task": name,
            "doc_to_text": f"{{{{question}}}} Answer in {get_language(target).name}:",
            "dataset_kwargs": {
                "splits": {split: {"local": data_file(source, target, split)} for split in ("test", "demos")}
            },
        }
    paper = [task_name(s, t) for s, t in PAPER_DIRECTIONS if s in languages and t in languages]
    files["_afp_langrate.yaml"] = group_config("afp_langrate", paper, ["answered"])
    return files


if __name__ == "__main__":
    write_family_for_languages(__file__, __doc__.splitlines()[0], LANGUAGES, configs)
