"""The fidelity target (``--keep``): the most pruning whose held-out fidelity is measured to hold.

A policy over the error allowance of ``curves.py``: every allowance in ``levels`` gives a
plan; a larger allowance prunes more (and runs faster) and keeps less. Each candidate is
refitted on the fit samples and measured on the held-out samples, giving two figures: its
*score* (what ``--keep`` states: top-1 agreement, cosine, ...) and an *estimate* of the same
figure that moves smoothly with the error (``fidelity.expected_top1`` for class scores; the
score itself where it already is smooth). On 128 held-out samples top-1 agreement moves in
steps of 0.8% and rises and falls by a step or two from one allowance to the next: bisected
on it, the search stops wherever a lucky candidate first passes, or gives up at an unlucky one.

So the search bisects the levels on the estimate (``log2(len(levels))`` evaluations), and then
checks the score: the answer is the largest allowance evaluated whose score *and* estimate
keep the target; where the bisection's answer misses on the score, a second bisection on both
runs below it, within ``MAX_EVALUATIONS``. The model returned is always one measured to keep the target.

The levels are ``RUNGS`` evenly ranked values of a finer ladder (every allowance that changes
some layer's ratio: about 300 on MobileNetV2). Adjacent rungs can be far apart: with BN folded,
``--keep 0.8`` and ``0.85`` stopped on the same rung, whose held-out top-1 was 0.898, because
the next one fell below 0.8. :func:`refined_search` therefore searches the ladder's values
between the answer and the next rung up again, with a budget of its own.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

MAX_EVALUATIONS = 12  # two bisections of the 32 levels: at most 6 + 5
RUNGS = 32  # levels the first search bisects; the second, between two of them, costs a few more

Measured = Union[float, tuple[float, float]]  # the score, or (score, estimate)


def search(
    levels: Sequence[float], score: Callable[[float], Measured], keep: float
) -> tuple[Optional[float], list[tuple[float, float]]]:
    """The largest allowance of ``levels`` (ascending) found to keep ``keep``, or None when
    none evaluated does; and every ``(allowance, score)`` measured, in order.

    ``score`` gives a candidate's score, or its score and a smoother estimate of it: the
    levels are bisected on the estimate, and the answer is one whose score and estimate both
    keep the target."""
    measured: dict[int, tuple[float, float]] = {}
    trail: list[tuple[float, float]] = []

    def at(index: int) -> tuple[float, float]:
        if index not in measured:
            value = score(levels[index])
            pair = (float(value[0]), float(value[1])) if isinstance(value, tuple) else (float(value), float(value))
            measured[index] = pair
            trail.append((levels[index], pair[0]))
        return measured[index]

    def keeps(index: int) -> bool:
        return min(at(index)) >= keep

    low, high = (
        -1,
        len(levels),
    )  # the estimate keeps the target at levels[low] (-1: none known), misses it at levels[high]
    while high - low > 1 and len(measured) < MAX_EVALUATIONS:
        middle = (low + high) // 2
        if at(middle)[1] >= keep:
            low = middle
        else:
            high = middle
    # The estimate passed up to levels[low]; where the score did not, bisect again between the
    # highest rung already measured to keep and low (stepping down one rung at a time ran out of
    # evaluations on MobileNetV2 at --keep 0.8 and left every layer whole, while 0.85 pruned).
    floor = max((i for i in measured if i <= low and keeps(i)), default=-1)
    while low - floor > 1 and len(measured) < MAX_EVALUATIONS:
        middle = (floor + low) // 2
        if keeps(middle):
            floor = middle
        else:
            low = middle
    found = [i for i in measured if keeps(i)]
    return (levels[max(found)] if found else None), trail


def evenly_ranked(ladder: Sequence[float], most: int) -> list[float]:
    """``ladder`` (ascending), or ``most`` of its values at evenly spaced ranks, both ends included."""
    if len(ladder) <= most:
        return list(ladder)
    return [ladder[i] for i in np.unique(np.linspace(0, len(ladder) - 1, most).round().astype(int))]


def refined_search(
    ladder: Sequence[float], score: Callable[[float], Measured], keep: float, rungs: int = RUNGS
) -> tuple[Optional[float], list[tuple[float, float]]]:
    """:func:`search` on ``rungs`` evenly ranked values of ``ladder`` (ascending), then on the
    values of ``ladder`` between its answer and the next rung up: the largest allowance found to
    keep ``keep`` (or None) and every ``(allowance, score)`` measured, in order."""
    coarse = evenly_ranked(ladder, rungs)
    found, trail = search(coarse, score, keep)
    if found is None:  # coarse[0] is the ladder's first value: nothing lies below it
        return None, trail
    above = [level for level in coarse if level > found]
    between = [level for level in ladder if found < level < (above[0] if above else float("inf"))]
    finer, more = search(between, score, keep) if between else (None, [])
    return (found if finer is None else finer), trail + more
