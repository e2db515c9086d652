"""The fidelity target (``--keep``): the most pruning whose held-out fidelity is measured to hold.

A policy over the error allowance of ``allowance.py``: every allowance in ``levels`` gives a
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
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

MAX_EVALUATIONS = 12  # two bisections of the 32 levels: at most 6 + 5

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

    low, high = -1, len(levels)  # the estimate keeps the target at levels[low] (-1: none known), misses it at levels[high]
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
