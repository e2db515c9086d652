"""The fidelity target (``--keep``): the most pruning whose held-out fidelity is measured to hold.

A policy over the error allowance of ``allowance.py``: every allowance in ``levels`` gives a
plan; a larger allowance prunes more (and runs faster) and keeps less. The search bisects the
levels, measuring each candidate's score on the held-out samples (after its refit on the fit
samples), and returns the largest allowance measured to keep the target: ``log2(len(levels))``
evaluations, at most ``MAX_EVALUATIONS``. Fidelity is assumed to fall as the allowance grows;
where it does not, the answer is still one that was measured to keep the target.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

MAX_EVALUATIONS = 9


def search(
    levels: Sequence[float], score: Callable[[float], float], keep: float
) -> tuple[Optional[float], list[tuple[float, float]]]:
    """The largest allowance of ``levels`` (ascending) whose ``score`` is at least ``keep``, or
    None when even the smallest misses it; and every ``(allowance, score)`` measured."""
    low, high = -1, len(levels)  # levels[low] keeps the target (-1: none known); levels[high] misses it
    trail: list[tuple[float, float]] = []
    while high - low > 1 and len(trail) < MAX_EVALUATIONS:
        middle = (low + high) // 2
        measured = score(levels[middle])
        trail.append((levels[middle], measured))
        if measured >= keep:
            low = middle
        else:
            high = middle
    return (levels[low] if low >= 0 else None), trail
