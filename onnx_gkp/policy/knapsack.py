"""One joint choice of every layer's (kept count, ``G``) under a user's budget.

Each layer offers a few options, each with a quality cost (lower is better, additive over
layers: the layers' relative output errors, ``quality.py``) and a resource cost (the MACs or
the measured seconds it keeps). Leaving the layer whole is always one of them, at quality 0.
We want one option per layer with the total resource within the budget and the least total
quality cost: a multiple-choice knapsack.

Solved exactly by dynamic programming over the resource, rounded *up* to ``budget /
resolution`` units, so any choice the table accepts truly fits the budget; the price is that
a choice whose rounded cost overshoots by less than one unit per layer is missed (at most
``layers / resolution`` of the budget, 0.3% for 60 layers). A budget that close to the least
possible gets the cheapest option of every layer. A Lagrangian relaxation would
be faster but only reaches choices on the lower convex hull of each layer's options, which
the ratio grid does not guarantee; at a few thousand units and under a hundred options per
layer the table costs well under a second, so exactness is cheap. Plain numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Option:
    """One way to prune a layer: ``keep`` channels per group in ``groups`` groups."""

    keep: int
    groups: int
    quality: float  # estimated quality cost (0 = the layer left whole)
    cost: float  # resource kept: MACs or seconds


class Infeasible(ValueError):
    """No choice of options fits the budget."""


def allocate(layers: Sequence[Sequence[Option]], budget: float, resolution: int = 20000) -> list[int]:
    """Index of the chosen option of each layer: total ``cost`` <= ``budget``, least total quality.

    Ties go to the choice with the smaller rounded total cost, then to earlier options.
    """
    least = sum(min(o.cost for o in options) for options in layers)
    if least > budget * (1 + 1e-12):
        raise Infeasible(f"the budget needs at most {budget:.4g} kept, but the most pruning possible keeps {least:.4g}")
    if not layers:
        return []
    unit = budget / resolution if budget > 0 else 1.0
    width = resolution + 1
    best = np.zeros(width)  # least quality with total rounded cost <= index
    picks = np.empty((len(layers), width), dtype=np.int32)
    for i, options in enumerate(layers):
        merged = np.full(width, np.inf)
        for j, option in enumerate(options):
            units = math.ceil(option.cost / unit - 1e-9)
            if units >= width:
                continue
            shifted = np.full(width, np.inf)
            shifted[units:] = best[: width - units] + option.quality
            better = shifted < merged
            merged[better] = shifted[better]
            picks[i, better] = j
        best = merged
    if not np.isfinite(best[-1]):
        # Within a rounding unit per layer of the least possible: the cheapest option everywhere
        # fits (checked above) and is all that is left.
        return [min(range(len(options)), key=lambda j: (options[j].cost, options[j].quality)) for options in layers]
    # The smallest total that already reaches the least quality, then walk the choices back.
    target = int(np.flatnonzero(best <= best[-1])[0])
    chosen = []
    for i in range(len(layers) - 1, -1, -1):
        j = int(picks[i, target])
        chosen.append(j)
        target -= math.ceil(layers[i][j].cost / unit - 1e-9)
    return chosen[::-1]
