"""afp_flores hooks: parallel data loading (FLORES+ hub or a FLORES-200 folder) and corpus BLEU / chrF++."""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import (  # noqa: E402,F401
    FixedDemonstrations,
    corpus_bleu,
    corpus_chrf_plus_plus,
    first_line,
    load_splits,
)


def process_results(doc, results):
    """Keep (prediction, reference) pairs: BLEU and chrF++ are corpus-level, computed in the aggregations."""
    prediction = first_line(results[0])
    return {
        "bleu_target_tok": (prediction, doc["target"], doc["bleu_tokenizer"]),
        "chrfpp": (prediction, doc["target"]),
    }


def bleu_target_tok(items):
    """sacrebleu corpus BLEU with the target language's tokenizer (stored on every document).

    Not lm-eval's built-in ``bleu`` (always sacrebleu's default ``13a``, which sees unsegmented Chinese as one
    token): hence a name of its own."""
    predictions, references, tokenizers = zip(*items)
    return corpus_bleu(list(predictions), list(references), tokenizers[0])


def chrfpp(items):
    predictions, references = zip(*items)
    return corpus_chrf_plus_plus(list(predictions), list(references))
