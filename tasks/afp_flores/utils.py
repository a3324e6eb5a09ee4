"""afp_flores hooks: parallel data loading (FLORES+ hub or a FLORES-200 folder) and corpus BLEU / chrF++."""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import (  # noqa: E402,F401
    FixedDemonstrations,
    bleu_from_statistics,
    bleu_sentence_statistics,
    chrf_plus_plus_from_statistics,
    chrf_plus_plus_sentence_statistics,
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


# Additive per-sentence statistics of both metrics (see afp_task_common): afp evaluate's paired bootstrap sums them
# per resample; lm-eval itself never reads these attributes.
def _bleu_items_statistics(items):
    predictions, references, tokenizers = zip(*items)
    return bleu_sentence_statistics(list(predictions), list(references), tokenizers[0])


def _chrfpp_items_statistics(items):
    predictions, references = zip(*items)
    return chrf_plus_plus_sentence_statistics(list(predictions), list(references))


bleu_target_tok.item_statistics = _bleu_items_statistics
bleu_target_tok.score_statistics = bleu_from_statistics
chrfpp.item_statistics = _chrfpp_items_statistics
chrfpp.score_statistics = chrf_plus_plus_from_statistics
