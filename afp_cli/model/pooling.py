"""The pooling choice recipes and commands share (``last-1``, ``avg-3``, ``max``, ``auto``), parsed without torch.

This module owns the choice whole: the method names (``METHODS``, from which the spelling's pattern, its errors and
the help texts are built), the check that a layer lies within a model (``check_depth``), and how ``auto`` picks
its layer from a measured retrieval table (``choose_layer``). Reading a recipe or a command line must not wait for
torch; the pooling itself is afp_cli/model/representations.py, the measurement afp_cli/model/scoring.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from afp_cli.errors import AfpError

# How a layer's token states become one vector; afp_cli/model/representations.py implements each (a test holds the
# two lists equal). Adding a method: add it here and there.
METHODS: tuple[str, ...] = ("last", "avg", "max")
METHOD_HELP = "last (last non-padding token), avg (mean over tokens) or max (max over tokens)"
AUTO = "auto"  # the layer measured at start-up: where the base model's translations retrieve each other best

_SPEC = re.compile(rf"^({'|'.join(METHODS)})(?:-(\d+|{AUTO}))?$")
_FORMS = ", ".join([*METHODS, *(f"{method}-N" for method in METHODS), AUTO, *(f"{m}-{AUTO}" for m in METHODS)])
LAYER_SPEC_HELP = (
    f"last-N / avg-N / max-N = {METHOD_HELP.replace(' or ', ', ')} of layer N (0 = embeddings); last / avg / max = "
    "the final layer"
)
SPEC_HELP = (
    f"{LAYER_SPEC_HELP}; {AUTO} (= last-{AUTO}), avg-{AUTO}, max-{AUTO}: the layer where the base model retrieves "
    "translations best, measured before the first step (never the embeddings or the last layer)."
)


@dataclass(frozen=True)
class Pooling:
    """Where a sentence vector comes from: ``method`` over the tokens of hidden layer ``layer`` (None: final).

    ``auto`` marks a choice still to be measured (``layer`` is then None until :meth:`at` resolves it).
    """

    method: str
    layer: int | None
    auto: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown pooling method {self.method!r}, use one of {', '.join(METHODS)}")
        if self.auto and self.layer is not None:
            raise ValueError("an auto pooling has no layer until it is measured")

    @property
    def spec(self) -> str:
        """As recipes write it: ``last-1``, ``avg``, ``last-auto``."""
        if self.auto:
            return f"{self.method}-{AUTO}"
        return self.method if self.layer is None else f"{self.method}-{self.layer}"

    def at(self, layer: int) -> Pooling:
        """The same method at a measured ``layer`` (resolves ``auto``)."""
        return Pooling(self.method, layer)

    def check_depth(self, depth: int, what: str) -> None:
        """AfpError when the layer lies beyond a model of ``depth`` blocks (``what`` names the option)."""
        if self.layer is not None:
            check_depth(self.layer, depth, what)


def parse_pooling(spec: str) -> Pooling:
    """Read a pooling as recipes write it (``mcl.pooling``): ``last-1`` is the last token of layer 1 (the official
    default), ``avg-3`` the mean over layer 3's tokens, plain ``last`` / ``avg`` / ``max`` the final layer, ``auto``
    (= ``last-auto``) and ``avg-auto`` / ``max-auto`` the layer measured at start-up.

    Raises:
        ValueError: not one of those forms.
    """
    if spec == AUTO:
        return Pooling(METHODS[0], None, auto=True)
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"'{spec}' is not one of {_FORMS}")
    layer = match.group(2)
    if layer == AUTO:
        return Pooling(match.group(1), None, auto=True)
    return Pooling(match.group(1), None if layer is None else int(layer))


def check_depth(layer: int, depth: int, what: str) -> None:
    """The one "layer beyond the model" check: layers run 0 (embeddings) .. ``depth`` (the final block's output)."""
    if not 0 <= layer <= depth:
        raise AfpError(f"{what}: layer {layer} is beyond the model (layers 0..{depth}, 0 = embeddings)")


def candidate_layers(depth: int) -> range:
    """The layers ``auto`` may choose: every block's output except the last (the embeddings hold no alignment yet,
    the last layer is shaped for the next token, not for meaning)."""
    return range(1, depth)


def choose_layer(retrieval: Mapping[int, float], depth: int) -> int:
    """The layer ``auto`` pools: the highest ``retrieval`` among :func:`candidate_layers`; a tie goes to the lower
    layer (MCL's forward pass stops at the pooling layer, so lower is cheaper).

    Args:
        retrieval: a score per layer (afp uses the mean top-1 retrieval of both directions); other layers ignored.
    """
    candidates = [layer for layer in candidate_layers(depth) if layer in retrieval]
    if not candidates:
        raise AfpError(
            f"mcl.pooling {AUTO}: a model of {depth} layer(s) has no layer to choose between the embeddings and the "
            "last layer: give the layer (e.g. last-1)"
        )
    return max(candidates, key=lambda layer: (retrieval[layer], -layer))
