"""Generate the afp_cls cross-lingual summarization tasks (English->Chinese and Chinese->English) and group.

Run from the repository root: ``python tasks/afp_cls/_generate_configs.py``. No hub copy loads with the current
``datasets`` (CrossSum on the hub is script-based), so these tasks read local files only, under ``data_dir``:

* English -> Chinese: CrossSum's release as published, line-aligned ``crosssum/english-chinese_simplified_{test,val}
  .source`` (the article) and ``.target`` (its summary), test for the test items and val for the demonstrations;
  or afp's earlier layout ``summarization/en2zh_{test,dev}.jsonl`` (fields ``article``, ``summary``);
* Chinese -> English: ``summarization/zh2en_{test,dev}.jsonl`` only (no published zh->en set is to be had offline).
"""

from pathlib import Path

from afp_cli.evaluation.taskgen import group_config, write_family
from afp_cli.languages import get_language

DIRECTIONS = (("en", "zh"), ("zh", "en"))
# CrossSum's file names for a direction whose release afp reads (its language names, simplified Chinese).
CROSSSUM = {("en", "zh"): "english-chinese_simplified"}
# Split roles: afp's JSONL split name and CrossSum's.
SPLITS = {"test": ("test", "test"), "demos": ("dev", "val")}


def split(source: str, target: str, role: str) -> dict:
    """Where a direction's split is read: the published CrossSum files (where afp has them), or afp's JSONL."""
    jsonl_split, crosssum_split = SPLITS[role]
    layouts = []
    if (source, target) in CROSSSUM:
        stem = f"crosssum/{CROSSSUM[source, target]}_{crosssum_split}"
        layouts.append(
            {
                "source": {"local": f"{stem}.source"},
                "target": {"local": f"{stem}.target"},
                "columns": {"source": "article", "target": "summary"},
            }
        )
    layouts.append({"local": f"summarization/{source}2{target}_{jsonl_split}.jsonl"})
    return {"hub_split": jsonl_split, "layouts": layouts}


def configs() -> dict:
    files = {}
    for source, target in DIRECTIONS:
        name = f"afp_cls_{source}-{target}"
        files[f"{name}.yaml"] = {
            "include": "_afp_cls_template_yaml",
            "task": name,
            "doc_to_text": f"Article: {{{{article}}}}\nSummary in {get_language(target).name}:",
            "dataset_kwargs": {
                "splits": {role: split(source, target, role) for role in SPLITS},
                "fields": ["article", "summary"],
            },
        }
    names = [f"afp_cls_{source}-{target}" for source, target in DIRECTIONS]
    files["_afp_cls.yaml"] = group_config("afp_cls", names, ["rouge1", "rouge2", "rougeL"])
    return files


if __name__ == "__main__":
    write_family(Path(__file__).parent, configs())
