"""``mcl.pooling: auto``: before the first step, pool where the base model's translations already find each other.

One forward pass over the held-out pairs (oriented by language: afp_cli/align/held_out.py) keeps every hidden
state; top-1 retrieval both ways is measured at every layer (afp_cli/model/scoring.py:retrieval_by_layer), and the
layer with the best mean of the two directions is chosen, never the embeddings or the last layer, the lower one on
a tie (afp_cli/model/pooling.py:choose_layer). Measured on the two real models afp has, the official layer 1 sits
near chance: Gemma 3 270M retrieves 0.01 there and 0.77 at layer 11 (issue #28, docs/align.md).

The choice is resolved into the run: ``mcl.pooling_resolved`` in recipe.yaml (a resume, or a copy of the recipe,
pools there without measuring again), the per-layer table in summary.json, and one start-up line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from afp_cli.align.held_out import HeldOut
from afp_cli.model.pooling import Pooling, choose_layer
from afp_cli.model.scoring import retrieval_by_layer

# With data.held_out 0, auto measures on this many training pairs (retrieval among a few dozen pairs already
# separates a layer near chance from one at 0.3+; more costs start-up time).
TRAINING_SLICE = 128


@dataclass(frozen=True)
class LayerChoice:
    """What ``auto`` measured and chose."""

    pooling: Pooling  # the resolved choice (``last-11``)
    requested: Pooling  # what the recipe asked (``last-auto``)
    retrieval: dict[int, tuple[float, float]]  # layer → top-1 (first → second language, and back)
    directions: tuple[str, str]  # ("en→zh", "zh→en")
    pairs: int
    measured_on: str  # "held-out" or "training"
    seconds: float = 0.0  # the measurement's wall time (one pass over the pairs)

    def mean(self, layer: int) -> float:
        return sum(self.retrieval[layer]) / 2

    def line(self) -> str:
        """``pooling auto → last-11 (retrieval 0.77 at layer 11; 0.01 at layer 1; …)``."""
        chosen = self.pooling.layer
        compared = f"; {self.mean(1):.2f} at layer 1" if chosen != 1 and 1 in self.retrieval else ""
        where = "held-out pairs" if self.measured_on == "held-out" else "training pairs (data.held_out is 0)"
        return (
            f"pooling {self.requested.spec.replace('last-auto', 'auto')} → {self.pooling.spec} (retrieval "
            f"{self.mean(chosen):.2f} at layer {chosen}{compared}; mean top-1 of {' and '.join(self.directions)} "
            f"over {self.pairs} {where}; {self.seconds:.1f} s)"
        )

    def summary(self) -> dict[str, Any]:
        """summary.json's ``pooling_auto``: the choice and the table it was made from."""
        return {
            "requested": self.requested.spec,
            "resolved": self.pooling.spec,
            "measured_on": self.measured_on,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 3),
            "directions": list(self.directions),
            "retrieval_by_layer": [
                {"layer": layer, self.directions[0]: there, self.directions[1]: back, "mean": (there + back) / 2}
                for layer, (there, back) in sorted(self.retrieval.items())
            ],
        }


def measured_pairs(held_out: HeldOut, train_slice: HeldOut) -> tuple[HeldOut, str]:
    """The held-out pairs, or (none held out) the training slice, and which one it is."""
    if len(held_out) >= 2:
        return held_out, "held-out"
    return train_slice, "training"


def measure_layer(
    model,
    pairs: HeldOut,
    measured_on: str,
    requested: Pooling,
    depth: int,
    batch_size: int,
    pad_token_id: int,
    device: str,
    autocast,
    through=None,
) -> LayerChoice:
    """Retrieval at every layer 0..depth on ``pairs`` and the layer ``auto`` chooses.

    Args:
        batch_size: examples per forward pass (every hidden state of a batch is held at once).
        through: the engine's wrapped entry (every process must call this alike; afp_cli/align/held_out.py).
    """
    started = time.perf_counter()
    retrieval = retrieval_by_layer(
        model,
        pairs.batches(batch_size, pad_token_id),
        requested.method,
        range(depth + 1),
        device,
        autocast,
        through,
    )
    layer = choose_layer({layer: sum(both) / 2 for layer, both in retrieval.items()}, depth)
    seconds = time.perf_counter() - started
    return LayerChoice(requested.at(layer), requested, retrieval, pairs.directions, len(pairs), measured_on, seconds)


def resolve_auto_pooling(
    config,
    model,
    pairs: HeldOut,
    measured_on: str,
    pad_token_id: int,
    device: str,
    autocast,
    through,
    processes,
    console,
) -> LayerChoice | None:
    """For ``mcl.pooling: auto``: measure, agree on the main process's layer, fix it in ``config.mcl`` (so
    recipe.yaml records it) and say so in one line; None when there is nothing to measure (another pooling, MCL
    off, or the layer already resolved: a resume, or a recipe that gives ``mcl.pooling_resolved``).

    Every process measures alike (the engine may need all of them for a pass) and then pools where the main one
    measured, so rounding that differs between devices cannot split the processes between two layers.
    """
    mcl = config.mcl
    if not mcl.enabled or not mcl.requested_pooling.auto:
        return None
    if mcl.pooling_resolved is not None:
        console.print(f"pooling {mcl.pooling} → {mcl.pooling_resolved} (from the recipe: not measured again)")
        return None
    choice = measure_layer(
        model,
        pairs,
        measured_on,
        mcl.requested_pooling,
        model.config.num_hidden_layers,
        max(2, config.train.batch_size),
        pad_token_id,
        device,
        autocast,
        through,
    )
    mcl.resolve_pooling(processes.on_main(lambda: choice.pooling.spec))
    console.print(choice.line(), markup=False, highlight=False)
    return choice
