"""Data loading and metrics shared by afp's lm-eval task families (hub by default, local files with data_dir).

Each family's ``utils.py`` imports this file, so plain ``lm_eval --include_path tasks/`` needs nothing from afp.
A task YAML names its data in ``dataset_kwargs`` (hub dataset and, per split, the local file or the local layouts
that replace it); lm-eval calls ``custom_dataset`` with those kwargs plus the run's metadata, so ``--metadata
'{"data_dir": D}'`` (what ``afp evaluate --data-dir D`` passes) switches every afp task to the files under D, with
no fallback.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------- data loading


class LocalDataError(ValueError):
    """A local data file named by a task is missing, not UTF-8 or malformed (message names file, line and field)."""


def local_path(data_dir: str | Path, relative: str) -> Path:
    return Path(data_dir) / relative


def _parse_rows(path: Path, handle) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise LocalDataError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise LocalDataError(f"{path}:{number}: a JSON object expected, got {type(row).__name__}")
            rows.append(row)
        return rows
    if path.suffix == ".tsv":
        # PAWS-X sentences contain quote characters: no CSV quoting, one row a line.
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = []
        for row in reader:
            missing = [name for name, value in row.items() if value is None]
            if missing or None in row:
                problem = f"no value for '{missing[0]}'" if missing else "more fields than the header"
                raise LocalDataError(f"{path}:{reader.line_num}: {problem} (header: {' '.join(reader.fieldnames)})")
            rows.append(row)
        return rows
    # FLORES-200 layout: one sentence a line, line i of every language aligned.
    return [{"text": line.rstrip("\n")} for line in handle]


def _read_text(path: Path, parse):
    """``parse(path, handle)`` on a UTF-8 file; a missing or non-UTF-8 file is one LocalDataError naming it."""
    if not path.is_file():
        raise LocalDataError(f"{path}: missing local data file")
    try:
        with path.open(encoding="utf-8") as handle:
            return parse(path, handle)
    except UnicodeDecodeError as error:
        raise LocalDataError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save the file as UTF-8"
        ) from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines (``.jsonl``), TSV with header (``.tsv``) or plain one-sentence-a-line file."""
    return _read_text(path, _parse_rows)


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line without its newline)`` for each line of a UTF-8 file (a published format's reader)."""
    return _read_text(path, lambda _, handle: [(n, line.rstrip("\n")) for n, line in enumerate(handle, start=1)])


def check_fields(rows: list[dict[str, Any]], fields: list[str], where: str) -> None:
    """Every row has every field a task's prompt reads (a missing one would fail deep inside lm-eval)."""
    for number, row in enumerate(rows, start=1):
        for name in fields:
            if row.get(name) is None:
                raise LocalDataError(f"{where}: row {number}: field '{name}' missing (needs: {', '.join(fields)})")


def _hub_rows(hub_path: str, hub_name: str | None, hub_split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return list(datasets.load_dataset(hub_path, hub_name, split=hub_split))
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error):
            raise
        # datasets >= 4 refuses loading scripts: a hub copy that moved to one (or still has one) cannot be read
        raise LocalDataError(
            f"{hub_path} ({hub_name or 'default'}, {hub_split}): the dataset is read by a loading script, which "
            f"datasets {datasets.__version__} no longer runs; evaluate from local files: afp evaluate --data-dir D, "
            "or lm_eval --metadata '{\"data_dir\": D}' (docs/evaluate.md, Local data)"
        ) from None


def _hub_split_rows(spec: dict[str, Any], hub_path: str | None) -> list[dict[str, Any]]:
    if "source" in spec:  # parallel text: the hub's rows have the sentence in "text"
        source, target = (_hub_split_rows(spec[side], hub_path) for side in ("source", "target"))
        return [{"source": s["text"], "target": t["text"]} for s, t in zip(source, target)]
    hub_path = spec.get("hub_path", hub_path)
    if hub_path is None:
        needs = first_local_file(spec)
        raise LocalDataError(f"no hub dataset loads for this task: pass data_dir (needs {needs})")
    return _hub_rows(hub_path, spec.get("hub_name"), spec["hub_split"])


# ------------------------------------------------------------------------------------------------ local layouts
# A split's local data comes in one of its ``layouts`` (a spec without ``layouts`` is its own single layout):
#   {local: F}                              rows of F by its suffix (read_rows)
#   {local: F, reader: NAME, ...}           rows of F by a family's reader for a published format (readers[NAME])
#   {source: {local: S}, target: {local: T}} line-aligned parallel text, zipped into rows {source, target}
# and a layout may rename its columns (``columns``) to the names the template reads. Several layouts let a task
# read a benchmark as published and in the hub's schema; exactly one must be present under data_dir: with two,
# the files could hold different sets (the hub's XWinograd zh has 504 schemas, the authors' release 16), and
# afp will not guess which one the user meant.

Reader = Callable[[Path, dict[str, Any]], list[dict[str, Any]]]


def split_layouts(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("layouts") or [spec])


def layout_files(layout: dict[str, Any], data_dir: str | Path) -> list[Path]:
    parts = [layout["source"], layout["target"]] if "source" in layout else [layout]
    return [local_path(data_dir, part["local"]) for part in parts]


def first_local_file(spec: dict[str, Any]) -> Path:
    """The file a split reads first (relative to data_dir): what a message asking for data_dir names."""
    return layout_files(split_layouts(spec)[0], "")[0]


def choose_layout(spec: dict[str, Any], data_dir: str | Path) -> dict[str, Any]:
    """The one layout of a split whose files are all under ``data_dir``; LocalDataError when none or several is.

    With none, the error names the first missing file of the layout the user seems to hold (some of its files
    present, else its folders: ``summarization/`` with afp's JSONL, not ``crosssum/``), else of the first
    layout, and the other layouts that would do.
    """
    layouts = split_layouts(spec)
    files = [layout_files(layout, data_dir) for layout in layouts]
    present = [index for index, paths in enumerate(files) if all(path.is_file() for path in paths)]
    if len(present) == 1:
        return layouts[present[0]]
    if present:
        held = " and ".join(" + ".join(str(path) for path in files[index]) for index in present)
        raise LocalDataError(
            f"{held}: the same split in {len(present)} layouts; keep one (they may hold different rows, and afp "
            "will not guess which you meant)"
        )
    begun = next(
        (paths for paths in files if any(path.is_file() for path in paths)),
        next((paths for paths in files if all(path.parent.is_dir() for path in paths)), files[0]),
    )
    missing = next(path for path in begun if not path.is_file())
    others = [" + ".join(str(path) for path in paths) for paths in files if paths is not begun]
    hint = f", nor is {' nor '.join(others)} there (either layout will do)" if others else ""
    raise LocalDataError(f"{missing}: missing local data file{hint}")


def _parallel_rows(source: Path, target: Path) -> list[dict[str, Any]]:
    """Line i of ``source`` and line i of ``target`` as one row ``{source, target}``."""
    sources, targets = read_rows(source), read_rows(target)
    if len(sources) != len(targets):
        shorter = source if len(sources) < len(targets) else target
        line = min(len(sources), len(targets)) + 1
        raise LocalDataError(
            f"{shorter}:{line}: no line here to pair with the other file's line {line} ({source} has "
            f"{len(sources)} lines, {target} has {len(targets)}; line i of one is the pair of line i of the other)"
        )
    return [{"source": s["text"], "target": t["text"]} for s, t in zip(sources, targets)]


def _local_split_rows(
    spec: dict[str, Any], data_dir: str, columns: dict[str, str], readers: dict[str, Reader]
) -> tuple[list[dict[str, Any]], str]:
    """The rows of a split's present layout, columns renamed, and the file its errors name."""
    layout = choose_layout(spec, data_dir)
    path = layout_files(layout, data_dir)[0]
    if "source" in layout:
        rows = _parallel_rows(*layout_files(layout, data_dir))
    elif "reader" in layout:
        if layout["reader"] not in readers:  # a task configuration error, not the user's
            raise ValueError(f"no reader '{layout['reader']}' for {path} (readers: {', '.join(readers) or 'none'})")
        rows = readers[layout["reader"]](path, layout)
    else:
        rows = read_rows(path)
    # Published files and the hub spell some columns differently (XStoryCloze's InputSentence1 is the hub's
    # input_sentence_1): local rows get the hub's names, so one template reads both.
    renamed = {**columns, **(layout.get("columns") or {})}
    if renamed:
        rows = [{renamed.get(name, name): value for name, value in row.items()} for row in rows]
    return rows, str(path)


def _integer_label(row: dict[str, Any], label_names: list[str], where: str) -> dict[str, Any]:
    """Labels as integers, whether a file has ``1``, ``"1"`` or a label name (``"entailment"`` -> 0)."""
    label = row.get("label")
    if isinstance(label, str):
        label = label.strip()
        if label in label_names:
            return {**row, "label": label_names.index(label)}
        try:
            return {**row, "label": int(label)}
        except ValueError:
            names = f" or one of {', '.join(label_names)}" if label_names else ""
            raise LocalDataError(f"{where}: field 'label': '{label}' is not an integer{names}") from None
    return row


# A demonstration split whose local files are missing (or present in two layouts) loads as one row carrying the
# error: a 0-shot run never reads it, and FixedDemonstrations raises that error the moment a k-shot run asks it
# for a demonstration.
DEFERRED_ERROR_FIELD = "afp_local_data_error"


def load_splits(
    hub_path: str | None = None,
    splits: dict | None = None,
    data_dir: str | None = None,
    extra_fields: dict | None = None,
    label_names: list[str] | None = None,
    columns: dict | None = None,
    fields: list[str] | None = None,
    demonstration_split: str = "demos",
    readers: dict[str, Reader] | None = None,
    **_: Any,
):
    """``custom_dataset`` hook: a DatasetDict with one entry per split of ``splits``.

    A split spec is ``{hub_name, hub_split, local}`` (plus ``hub_path`` where it differs from the task's), or
    ``{source: spec, target: spec}`` for parallel text (zipped line by line into ``source``/``target``), or the
    hub keys with ``layouts``: the local layouts the split may come in (see "local layouts" above; a family
    passes ``readers`` for the published formats its layouts name).
    ``columns`` renames local columns to the hub's names; ``fields`` are the fields every row must have (checked
    here, so a malformed file is one line naming it, not a template error deep in lm-eval); ``extra_fields`` are
    added to every row (a FLORES task adds its BLEU tokenizer); a ``label`` is made an integer once here,
    ``label_names`` giving the ids of spelled-out labels (cheaper than a ``process_docs`` hook, which lm-eval
    re-runs on every access). Other keyword arguments (lm-eval's metadata, the model args) are ignored.

    The ``demonstration_split`` (the tasks' ``fewshot_split``, ``demos``) is read only if its local files exist:
    lm-eval loads every split of a task whatever its k, and a 0-shot run must not need a demonstration file. A
    missing one becomes a placeholder row that :class:`FixedDemonstrations` turns into the usual missing-file error
    when k > 0.
    """
    import datasets

    loaded = {}
    for split, spec in (splits or {}).items():
        if data_dir:
            if split == demonstration_split:
                try:
                    choose_layout(spec, data_dir)
                except LocalDataError as error:
                    loaded[split] = datasets.Dataset.from_list([{DEFERRED_ERROR_FIELD: str(error)}])
                    continue
            rows, where = _local_split_rows(spec, data_dir, columns or {}, readers or {})
        else:
            named = spec.get("source", spec)
            rows, where = _hub_split_rows(spec, hub_path), f"{named.get('hub_name')}/{named.get('hub_split')}"
        check_fields(rows, list(fields or []), where)
        rows = [_integer_label(row, label_names or [], f"{where}: row {number}") for number, row in enumerate(rows, 1)]
        if not rows:
            raise LocalDataError(f"{where}: no rows")
        loaded[split] = datasets.Dataset.from_list([{**row, **(extra_fields or {})} for row in rows])
    return datasets.DatasetDict(loaded)


# --------------------------------------------------------------------------------------------- demonstrations


def official_demonstration_order(count: int, seed: int | None) -> list[int]:
    """Row indices of a demonstration file in the order the official evaluation draws them.

    ``get_random_items_no_replace`` in the official ``src/paws_x_prompt.py`` (likewise ``xcopa_prompt.py``,
    ``xnli_prompt.py``, ``xstorycloze_prompt.py``, ``xwinograd_prompt.py``; chongli17/CrossLingualAlignment) does
    ``random.seed(seed)``, ``random.shuffle(rows)`` with the rows in file order, then takes the first k. A shuffle
    moves rows by position only, so shuffling the indices with ``random.Random(seed)`` (the same generator state
    as ``random.seed(seed)``) gives the very same order.
    """
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def _fixed_sampler_class():
    from lm_eval.api.samplers import ContextSampler

    class FixedDemonstrations(ContextSampler):
        """One k-shot set per seed, the same demonstrations in the same order before every test item.

        The official evaluation's draw (see :func:`official_demonstration_order`); lm-eval's default sampler
        instead draws new demonstrations for each item. lm-eval hands the run's ``fewshot_random_seed`` to
        ``set_rnd``, so seed N here is seed N in the official code.
        """

        seed: int | None = None

        def set_rnd(self, rnd: int | None):
            self.seed = rnd
            return super().set_rnd(rnd)

        def sample(self, n: int, eval_doc=None, df=None, **kwargs):
            if df:
                self.df = df
            docs = self.fewshot_docs()
            if n > 0 and docs and DEFERRED_ERROR_FIELD in docs[0]:
                raise LocalDataError(docs[0][DEFERRED_ERROR_FIELD])
            if n > len(docs):
                raise LocalDataError(f"{n} demonstrations asked for, but the demonstration split has {len(docs)} rows")
            return [docs[index] for index in official_demonstration_order(len(docs), self.seed)[:n]]

    return FixedDemonstrations


def __getattr__(name: str):
    # lm-eval resolves `fewshot_config: sampler: !function utils.FixedDemonstrations` when it loads a task; the
    # class is built on first use so that importing this module for its data and metric helpers needs no lm-eval.
    if name == "FixedDemonstrations":
        globals()[name] = _fixed_sampler_class()
        return globals()[name]
    raise AttributeError(name)


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
        import ipadic  # noqa: F401
        import MeCab  # noqa: F401  (sacrebleu's ja-mecab needs mecab-python3 and ipadic)
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


# Sentence statistics that add up to the corpus score. sacrebleu computes corpus BLEU and chrF from the sum of
# per-sentence counts (n-gram matches and lengths); a paired bootstrap (afp evaluate's significance) sums the counts
# of each resample instead of re-tokenizing a thousand corpora: the same number as corpus_bleu / corpus_chrf on the
# resampled lists (tested), in seconds instead of minutes. sacrebleu's own paired tests use these two methods.
def _bleu_metric(tokenizer: str = "13a"):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=effective_bleu_tokenizer(tokenizer))


def _chrf_plus_plus_metric():
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2)


def bleu_sentence_statistics(predictions: list[str], references: list[str], tokenizer: str) -> list[list[float]]:
    return _bleu_metric(tokenizer)._extract_corpus_statistics(predictions, [references])


def bleu_from_statistics(summed: list[float]) -> float:
    return _bleu_metric()._compute_score_from_stats(list(summed)).score


def chrf_plus_plus_sentence_statistics(predictions: list[str], references: list[str]) -> list[list[float]]:
    return _chrf_plus_plus_metric()._extract_corpus_statistics(predictions, [references])


def chrf_plus_plus_from_statistics(summed: list[float]) -> float:
    return _chrf_plus_plus_metric()._compute_score_from_stats(list(summed)).score


def first_line(generation: str) -> str:
    """The answer a generate_until task scores: up to the first newline, without surrounding spaces."""
    return generation.split("\n", 1)[0].strip()
