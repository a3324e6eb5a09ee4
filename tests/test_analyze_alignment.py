"""Alignment metrics, pooling, pair and layer parsing, on small fixed vectors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from afp_cli.analyze.alignment import alignment_metrics, parse_layers, project_2d, read_pairs
from afp_cli.errors import AfpError

VECTORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])


def test_identical_pairs_have_similarity_one_and_perfect_retrieval():
    metrics = alignment_metrics(VECTORS, VECTORS.clone() * 3)  # scale does not matter: vectors are normalised
    assert metrics.pair_cosine == pytest.approx(1.0)
    assert metrics.alignment == pytest.approx(0.0, abs=1e-12)
    assert metrics.retrieval_x_to_y == 1.0 and metrics.retrieval_y_to_x == 1.0


def test_a_permutation_retrieves_nothing():
    shifted = VECTORS[[1, 2, 3, 0]]  # no sentence keeps its translation
    metrics = alignment_metrics(VECTORS, shifted)
    assert metrics.retrieval_x_to_y == 0.0 and metrics.retrieval_y_to_x == 0.0


def test_metrics_equal_a_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[2.0, 0.0], [1.0, 2.0]])  # y2 normalised = (1, 2) / √5
    c = 2 / math.sqrt(5)  # cos(x2, y2); cos(x1, y2) = 1 / √5
    metrics = alignment_metrics(x, y)
    assert metrics.pair_cosine == pytest.approx((1 + c) / 2)
    assert metrics.random_cosine == pytest.approx((1 / math.sqrt(5) + 0) / 2)  # x1·y2 and x2·y1
    assert metrics.alignment == pytest.approx((0 + (2 - 2 * c)) / 2)
    assert metrics.retrieval_x_to_y == 1.0 and metrics.retrieval_y_to_x == 1.0
    # Squared distances between the 4 unit vectors x1, x2, y1, y2 (6 distinct pairs), t = 2.
    squared = [2, 0, 2 - 2 / math.sqrt(5), 2, 2 - 2 * c, 2 - 2 / math.sqrt(5)]
    assert metrics.uniformity == pytest.approx(math.log(sum(math.exp(-2 * d) for d in squared) / 6))


def test_layers_parse_and_refuse_a_layer_beyond_the_model():
    assert parse_layers("all", 4) == [0, 1, 2, 3, 4]
    assert parse_layers("0,1,3-4", 4) == [0, 1, 3, 4]
    with pytest.raises(AfpError, match="layer 7 is beyond the model \\(layers 0..4"):
        parse_layers("1,7", 4)
    with pytest.raises(AfpError, match="not 'all'"):
        parse_layers("first", 4)


def test_pairs_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("en\tzh\nHello.\t你好。\nbroken line\n", encoding="utf-8")
    with pytest.raises(AfpError, match="pairs.tsv:3: field 'columns': expected 2 tab-separated columns, found 1"):
        read_pairs(path)
    path.write_text("en\tzh\nHello.\t \n", encoding="utf-8")
    with pytest.raises(AfpError, match="pairs.tsv:2: field 'zh': empty sentence"):
        read_pairs(path)
    path.write_text("en\txx\nHello.\t你好。\n", encoding="utf-8")
    with pytest.raises(AfpError, match="pairs.tsv:1: field 'xx': unknown language code.*--languages"):
        read_pairs(path)


def test_pairs_without_header_take_the_given_languages_and_json_lines_work(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Hello.\t你好。\nGood night.\t晚安。\n", encoding="utf-8")
    pairs = read_pairs(path, languages=["zh", "en"])
    assert pairs.languages == ("zh", "en") and pairs.sources == ["Hello.", "Good night."]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"en": "Hello.", "zh": "你好。"}\n{"translation": {"en": "Yes.", "zh": "是。"}}\n')
    assert read_pairs(jsonl, languages=["en", "zh"]).targets == ["你好。", "是。"]


def test_pairs_are_read_up_to_the_limit(shared_data):
    pairs = read_pairs(shared_data / "parallel" / "tatoeba_en-zh.tsv", max_pairs=5)
    assert pairs.languages == ("en", "zh")
    assert pairs.sources[0] == "May I try it on?" and pairs.targets[0] == "我能试一下吗？"
    assert len(pairs.sources) == len(pairs.targets) == 5


def test_pca_keeps_the_main_direction():
    import numpy as np

    points = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0], [20.0, 0.1, 1.0], [30.0, 0.0, 1.0]])
    projected = project_2d(points, "pca")
    assert projected.shape == (4, 2)
    assert np.allclose(np.abs(projected[:, 0]), [15.0, 5.0, 5.0, 15.0], atol=0.01)


def test_tsne_without_scikit_learn_says_what_to_install(monkeypatch):
    import numpy as np

    monkeypatch.setitem(__import__("sys").modules, "sklearn.manifold", None)  # import of it fails
    with pytest.raises(AfpError, match="pip install scikit-learn"):
        project_2d(np.zeros((6, 3)), "tsne")


def test_the_report_marks_the_layer_auto_would_pool_for_each_model():
    from afp_cli.analyze.alignment_run import auto_choices, mark_auto_choice

    def rows(model, scores):
        return [
            {"model": model, "layer": layer, "retrieval_x_to_y": there, "retrieval_y_to_x": back}
            for layer, (there, back) in enumerate(scores)
        ]

    # 4 layers: the embeddings (0) and the last (4) are never chosen, whatever they score; 2 and 3 tie → 2
    base = rows("base", [(0.9, 0.9), (0.1, 0.0), (0.5, 0.3), (0.4, 0.4), (1.0, 1.0)])
    adapter = rows("runs/afp", [(0.0, 0.0), (0.7, 0.9), (0.5, 0.5), (0.1, 0.1), (0.0, 0.0)])
    measured = base + adapter
    mark_auto_choice(measured, depth=4)
    assert [(row["model"], row["layer"]) for row in auto_choices(measured)] == [("base", 2), ("runs/afp", 1)]
    only_ends = rows("base", [(0.5, 0.5)]) + [{**rows("base", [(0, 0)] * 5)[4]}]  # --layers 0,4: no candidate
    mark_auto_choice(only_ends, depth=4)
    assert auto_choices(only_ends) == []
