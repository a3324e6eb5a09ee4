"""Generate the afp_cls cross-lingual summarization tasks (NCLS: English->Chinese and Chinese->English) and group.

Run from the repository root: ``python tasks/afp_cls/_generate_configs.py``. No hub copy of NCLS loads with the
current ``datasets`` (CrossSum, the closest hub set, is script-based), so these tasks read local JSON lines only:
``summarization/{src}2{tgt}_{dev,test}.jsonl`` with fields ``article`` and ``summary`` under ``data_dir``.
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import data_spec, group_config, write_family
from afp_cli.languages import get_language

DIRECTIONS = (("en", "zh"), ("zh", "en"))


def configs() -> dict:
    files = {}
    for source, target in DIRECTIONS:
        name = f"afp_cls_{source}-{target}"
        files[f"{name}.yaml"] = {
            "include": "_afp_cls_template_yaml",
            "task": name,
            "doc_to_text": f"Article: {{{{article}}}}\nSummary in {get_language(target).name}:",
            "dataset_kwargs": {
                "splits": {
                    role: data_spec(None, None, split, f"summarization/{source}2{target}_{split}.jsonl")
                    for role, split in (("test", "test"), ("demos", "dev"))
                }
            },
        }
    names = [f"afp_cls_{source}-{target}" for source, target in DIRECTIONS]
    files["_afp_cls.yaml"] = group_config("afp_cls", names, ["rouge1", "rouge2", "rougeL"])
    return files


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
