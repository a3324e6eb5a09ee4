"""Representation alignment: pool each layer's hidden states of translation pairs and measure how close they are.

Metrics per layer (on L2-normalised sentence vectors): mean cosine of translation pairs and of random pairs,
alignment and uniformity (Wang & Isola, 2020, "Understanding Contrastive Representation Learning through Alignment
and Uniformity on the Hypersphere"), and top-1 retrieval of the translation in both directions. Layer 0 is the
embedding output, layer i the output of block i, as in the AFP paper's "last token of layer 1" pooling.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from afp_cli.data.readers import read_parallel
from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language
from afp_cli.model.pooling import check_depth
from afp_cli.text_files import open_text, require_utf8

UNIFORMITY_T = 2.0  # Wang & Isola's t; alignment uses their alpha = 2 (squared distance)


# ----------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class ParallelPairs:
    languages: tuple[str, str]
    sources: list[str]
    targets: list[str]


def read_pairs(path: str | Path, max_pairs: int | None = None, languages: Sequence[str] | None = None) -> ParallelPairs:
    """The first ``max_pairs`` translation pairs of a TSV or JSON-lines file (formats of ``afp_cli.data.readers``).

    The two languages come from ``languages`` or else from the TSV's header line (``en<TAB>zh``).
    """
    path = require_utf8(path, "pairs")
    if languages is None:
        languages = _header_languages(path)
    if len(languages) != 2:
        raise AfpError(f"--languages: expected two language codes, got {', '.join(languages)}")
    codes = (get_language(languages[0]).code, get_language(languages[1]).code)
    sources, targets = [], []
    for pair in itertools.islice(read_parallel(path, *codes), max_pairs):
        for code, text in zip(codes, (pair.source, pair.target)):
            if not text:
                raise located(path, pair.line, code, "empty sentence")
        sources.append(pair.source)
        targets.append(pair.target)
    if len(sources) < 2:
        raise AfpError(f"{path}: at least 2 pairs are needed (random pairs and retrieval), found {len(sources)}")
    return ParallelPairs(languages=codes, sources=sources, targets=targets)


def _header_languages(path: Path) -> list[str]:
    with open_text(path) as file:
        columns = [column.strip() for column in file.readline().rstrip("\r\n").split("\t")]
    hint = "the first line must name the two languages (en<TAB>zh), or pass --languages en,zh"
    if len(columns) != 2:
        raise located(path, 1, None, hint)
    for column in columns:
        try:
            get_language(column)
        except AfpError as error:
            raise located(path, 1, column, f"{error}; {hint}") from None
    return columns


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``all`` -> 0..N; else a comma list of indices and ranges (``0,1,8-12``); an index beyond N is a user error."""
    if text.strip() == "all":
        return list(range(num_layers + 1))
    layers: list[int] = []
    try:
        for item in (part.strip() for part in text.split(",")):
            first, _, last = item.partition("-")
            layers.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise AfpError(f"--layers: '{text}' is not 'all' or a list like 0,1,8-12") from None
    if not layers:
        raise AfpError(f"--layers: '{text}' names no layer")
    for layer in layers:
        check_depth(layer, num_layers, "--layers")
    return sorted(set(layers))


# ----------------------------------------------------------------------------------------------------------------
# Hidden states -> sentence vectors


def pooled_states(
    model,
    tokenizer,
    pairs: ParallelPairs,
    layers: Sequence[int],
    pooling: str,
    batch_size: int,
    max_length: int,
    advance: Callable[[int], None] | None = None,
) -> dict[int, tuple]:
    """``{layer: (vectors_x, vectors_y)}`` as float32 CPU tensors, one forward pass per batch of pairs.

    Only pooled vectors are kept: memory is bounded by the batch (its hidden states) plus n × layers × d floats.
    The backbone runs without the LM head, whose logits (batch × length × vocabulary) would dwarf the states.
    """
    import torch

    from afp_cli.model.blocks import backbone
    from afp_cli.model.representations import pool

    collected: dict[int, list] = {layer: [] for layer in layers}
    count = len(pairs.sources)
    for start in range(0, count, batch_size):
        texts = pairs.sources[start : start + batch_size] + pairs.targets[start : start + batch_size]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        encoded = encoded.to(model.device)
        with torch.inference_mode():
            hidden_states = backbone(model)(**encoded, output_hidden_states=True).hidden_states
        for layer in layers:
            collected[layer].append(pool(hidden_states[layer], encoded["attention_mask"], pooling).float().cpu())
        if advance is not None:
            advance(len(texts) // 2)
    # Each batch holds its sources, then its targets: split every batch in half before joining them.
    return {
        layer: (
            torch.cat([part[: part.shape[0] // 2] for part in parts]),
            torch.cat([part[part.shape[0] // 2 :] for part in parts]),
        )
        for layer, parts in collected.items()
    }


# ----------------------------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class AlignmentMetrics:
    pair_cosine: float  # mean cosine of translation pairs
    random_cosine: float  # mean cosine of mismatched pairs (a seeded derangement): the baseline to beat
    alignment: float  # E ||x - y||^2 over translation pairs (lower = closer)
    uniformity: float  # log E exp(-t ||u - v||^2) over all distinct vectors of both languages (lower = spread)
    retrieval_x_to_y: float  # share of x whose nearest y (cosine) is its translation
    retrieval_y_to_x: float


def alignment_metrics(vectors_x, vectors_y, seed: int = 0) -> AlignmentMetrics:
    """All metrics of one layer; row i of ``vectors_x`` and ``vectors_y`` is a translation pair."""
    import torch

    x = torch.nn.functional.normalize(vectors_x.double(), dim=1)
    y = torch.nn.functional.normalize(vectors_y.double(), dim=1)
    count = x.shape[0]
    similarity = x @ y.T
    targets = torch.arange(count)
    # Pair x_order[i] with y_order[i + 1]: an order's neighbours are always different sentences.
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    mismatched = similarity[order, order.roll(-1)]
    both = torch.cat([x, y])
    distances = torch.nn.functional.pdist(both).pow(2)
    return AlignmentMetrics(
        pair_cosine=similarity.diagonal().mean().item(),
        random_cosine=mismatched.mean().item(),
        alignment=(x - y).pow(2).sum(dim=1).mean().item(),
        uniformity=math.log(torch.exp(-UNIFORMITY_T * distances).mean().item()),
        retrieval_x_to_y=(similarity.argmax(dim=1) == targets).double().mean().item(),
        retrieval_y_to_x=(similarity.argmax(dim=0) == targets).double().mean().item(),
    )


# ----------------------------------------------------------------------------------------------------------------
# 2-D maps


def project_2d(points, method: str = "pca", seed: int = 0):
    """Rows of ``points`` (numpy) mapped to 2-D: PCA by SVD (no extra dependency) or t-SNE (scikit-learn)."""
    import numpy as np

    if method == "pca":
        centered = points - points.mean(axis=0, keepdims=True)
        _, _, right = np.linalg.svd(centered, full_matrices=False)
        return centered @ right[:2].T
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise AfpError("--projection tsne needs scikit-learn: pip install scikit-learn") from None
        perplexity = min(30.0, max(2.0, (len(points) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    raise AfpError(f"--projection: unknown method '{method}', use pca or tsne")
