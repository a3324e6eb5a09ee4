"""Data loading and metrics shared by afp's lm-eval task families (hub by default, local files with data_dir).

Each family's ``utils.py`` imports this file, so plain ``lm_eval --include_path tasks/`` needs nothing from afp.
A task YAML names its data in ``dataset_kwargs`` (hub dataset and, per split, the local file that replaces it);
lm-eval calls ``custom_dataset`` with those kwargs plus the run's metadata, so ``--metadata '{"data_dir": D}'``
(what ``afp evaluate --data-dir D`` passes) switches every afp task to the files under D, with no fallback.
"""

from __future__ import annotations

import csv
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------- data loading


class LocalDataError(FileNotFoundError):
    """A local data file named by a task is missing or unreadable (message names file, line and field)."""


def local_path(data_dir: str | Path, relative: str) -> Path:
    return Path(data_dir) / relative


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines (``.jsonl``), TSV with header (``.tsv``) or plain one-sentence-a-line file."""
    if not path.is_file():
        raise LocalDataError(f"{path}: missing local data file")
    with path.open(encoding="utf-8") as handle:
        if path.suffix == ".jsonl":
            rows = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise LocalDataError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            return rows
        if path.suffix == ".tsv":
            # PAWS-X sentences contain quote characters: no CSV quoting, one row a line.
            return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        # FLORES-200 layout: one sentence a line, line i of every language aligned.
        return [{"text": line.rstrip("\n")} for line in handle]


def _hub_rows(hub_path: str, hub_name: str | None, hub_split: str) -> list[dict[str, Any]]:
    import datasets

    return list(datasets.load_dataset(hub_path, hub_name, split=hub_split))


def _split_rows(spec: dict[str, Any], hub_path: str | None, data_dir: str | None) -> list[dict[str, Any]]:
    if data_dir:
        return read_rows(local_path(data_dir, spec["local"]))
    hub_path = spec.get("hub_path", hub_path)
    if hub_path is None:
        raise LocalDataError(f"no hub dataset loads for this task: pass data_dir (needs {spec['local']})")
    return _hub_rows(hub_path, spec.get("hub_name"), spec["hub_split"])


def _integer_label(row: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """Labels as integers, whether a file has ``1``, ``"1"`` or a label name (``"entailment"`` -> 0)."""
    label = row.get("label")
    if isinstance(label, str):
        label = label.strip()
        row = {**row, "label": label_names.index(label) if label in label_names else int(label)}
    return row


def load_splits(hub_path: str | None = None, splits: dict | None = None, data_dir: str | None = None,
                extra_fields: dict | None = None, label_names: list[str] | None = None, **_: Any):
    """``custom_dataset`` hook: a DatasetDict with one entry per split of ``splits``.

    A split spec is ``{hub_name, hub_split, local}`` (plus ``hub_path`` where it differs from the task's), or ``{source: spec, target: spec}`` for parallel text
    (zipped line by line into ``source``/``target``). ``extra_fields`` are added to every row (a FLORES task
    adds its BLEU tokenizer); a ``label`` is made an integer once here, ``label_names`` giving the ids of
    spelled-out labels (cheaper than a ``process_docs`` hook, which lm-eval re-runs on every access). Other keyword arguments (lm-eval's metadata, the model args) are ignored.
    """
    import datasets

    loaded = {}
    for split, spec in (splits or {}).items():
        if "source" in spec:
            source = _split_rows(spec["source"], hub_path, data_dir)
            target = _split_rows(spec["target"], hub_path, data_dir)
            if len(source) != len(target):
                raise LocalDataError(
                    f"{spec['source']['local']} has {len(source)} lines but {spec['target']['local']} has {len(target)}"
                )
            rows = [{"source": s["text"], "target": t["text"]} for s, t in zip(source, target)]
        else:
            rows = _split_rows(spec, hub_path, data_dir)
        rows = [{**_integer_label(row, label_names or []), **(extra_fields or {})} for row in rows]
        loaded[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(loaded)


# ------------------------------------------------------------------------------------------------------ metrics

# Han ideographs, kana and CJK punctuation are scored one character a token (Chinese and Japanese are written
# without spaces); every other run of letters or digits, in any script, is one token.
_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_TOKEN = re.compile(rf"{_CJK}|[^\W_]+", re.UNICODE)


def cjk_tokenize(text: str) -> list[str]:
    """Lower-cased tokens with CJK split into characters (rouge-score's default drops all non-ASCII)."""
    cleaned = re.sub(_CJK, lambda match: f" {match.group(0)} ", text.lower())
    return _TOKEN.findall(cleaned)


class _CjkTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return cjk_tokenize(text)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_CjkTokenizer())


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure in [0, 1] with CJK-aware tokenization."""
    scores = _rouge_scorer().score(reference, prediction)
    return {name: score.fmeasure for name, score in scores.items()}


def mecab_available() -> bool:
    try:
        import MeCab  # noqa: F401  (sacrebleu's ja-mecab needs mecab-python3 and ipadic)
        import ipadic  # noqa: F401
    except ImportError:
        return False
    return True


def effective_bleu_tokenizer(requested: str) -> str:
    """``ja-mecab`` needs MeCab; without it Japanese is scored on characters (``char``), as documented."""
    if requested == "ja-mecab" and not mecab_available():
        return "char"
    return requested


def corpus_bleu(predictions: list[str], references: list[str], tokenizer: str) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references], tokenize=effective_bleu_tokenizer(tokenizer)).score


def corpus_chrf_plus_plus(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(predictions, [references], word_order=2).score


def first_line(generation: str) -> str:
    """The answer a generate_until task scores: up to the first newline, without surrounding spaces."""
    return generation.split("\n", 1)[0].strip()
