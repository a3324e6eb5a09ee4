"""The pooling choice's owner (afp_cli/model/pooling.py): its spelling, its depth check, and how `auto` chooses."""

from __future__ import annotations

import pytest

from afp_cli.errors import AfpError
from afp_cli.model.pooling import (
    METHODS,
    SPEC_HELP,
    Pooling,
    candidate_layers,
    check_depth,
    choose_layer,
    parse_pooling,
)


def test_every_method_named_by_the_owner_has_a_pooler_and_no_other():
    from afp_cli.model.representations import POOLERS

    assert tuple(POOLERS) == METHODS
    assert all(method in SPEC_HELP for method in METHODS)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("last-1", Pooling("last", 1)),
        ("avg-3", Pooling("avg", 3)),
        ("max", Pooling("max", None)),
        ("last-0", Pooling("last", 0)),
        ("auto", Pooling("last", None, auto=True)),
        ("last-auto", Pooling("last", None, auto=True)),
        ("avg-auto", Pooling("avg", None, auto=True)),
    ],
)
def test_spellings_parse_and_spell_back(spec, expected):
    assert parse_pooling(spec) == expected
    assert parse_pooling(expected.spec) == expected
    assert expected.spec == ("last-auto" if spec == "auto" else spec)


@pytest.mark.parametrize("spec", ["first-1", "last-", "last-1-2", "auto-1", "avg-x", "LAST-1", ""])
def test_a_bad_spelling_names_every_form(spec):
    with pytest.raises(ValueError, match="is not one of last, avg, max, last-N, avg-N, max-N, auto, last-auto"):
        parse_pooling(spec)


def test_resolving_auto_keeps_the_method_and_takes_the_layer():
    assert parse_pooling("avg-auto").at(11) == Pooling("avg", 11)
    assert not parse_pooling("avg-auto").at(11).auto


def test_one_depth_check_for_every_option():
    check_depth(4, 4, "--layers")  # the final block's output is a layer
    parse_pooling("last").check_depth(4, "mcl.pooling")  # the final layer: always within
    parse_pooling("auto").check_depth(4, "mcl.pooling")  # not measured yet: nothing to check
    with pytest.raises(AfpError, match=r"^mcl.pooling 'last-5': layer 5 is beyond the model \(layers 0..4, 0 = emb"):
        parse_pooling("last-5").check_depth(4, "mcl.pooling 'last-5'")
    with pytest.raises(AfpError, match=r"^--layers: layer -1 is beyond"):
        check_depth(-1, 4, "--layers")


def test_auto_picks_the_best_layer_between_the_embeddings_and_the_last():
    retrieval = {0: 0.99, 1: 0.01, 2: 0.30, 3: 0.77, 4: 0.50, 5: 0.98}  # 0 and 5 (the last) are never chosen
    assert list(candidate_layers(5)) == [1, 2, 3, 4]
    assert choose_layer(retrieval, depth=5) == 3


def test_a_tie_goes_to_the_lower_layer():
    assert choose_layer({1: 0.2, 2: 0.6, 3: 0.6, 4: 0.6}, depth=6) == 2


def test_a_model_without_a_middle_layer_has_nothing_to_choose():
    with pytest.raises(AfpError, match="has no layer to choose between the embeddings and the last layer"):
        choose_layer({0: 0.5, 1: 0.9}, depth=1)
