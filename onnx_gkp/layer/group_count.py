"""The flexible group count: which ``G`` each layer gets.

Parameters and MACs of a pruned layer depend only on the kept count ``m``, not on ``G``, so
the choice is between quality and what a larger ``G`` costs at run time.

Quality, data-free: the *pruned energy* ``p(G) = ||W - W_masked||^2 / ||W||^2``. For an input
of independent unit-variance channels it is the layer's expected relative output error, so it
is what a post-pruning evaluation of each candidate can measure without data. A larger ``G``
lets each group keep the channels its own filters need, so ``p`` falls as ``G`` grows:
minimised alone it always picks the largest candidate.

Cost: a larger ``G`` widens the input gather (``G * m`` channels) and moves onnxruntime onto
slower grouped-Conv kernels (``docs/method.md``). We price one doubling of ``G`` at a fixed
fraction ``beta`` of the error, and pick

    G* = argmin_G  p(G) * (1 + beta * log2 G)

so a doubling is taken only when it cuts the pruned energy by more than about ``beta``
(relative). ``beta = 0`` is quality-only; ties go to the smaller ``G``.

Run time, measured (``cost/table.py``): with per-candidate times on the target runtime, only the
counts measured faster than the dense Conv and within ``1 + slack`` of the fastest such count
compete on quality (:func:`fast_counts`); if none is faster than the dense Conv the layer is
better left whole.
"""

from __future__ import annotations

import numpy as np


def candidate_counts(c_out: int, max_groups: int) -> list[int]:
    """Divisors of ``c_out`` up to ``max_groups``, ascending."""
    return [g for g in range(1, min(c_out, max_groups) + 1) if c_out % g == 0]


def choose_group_count(pruned_energy: dict[int, float], beta: float) -> int:
    """The candidate minimising ``p(G) * (1 + beta * log2 G)``; the smaller ``G`` on ties."""
    counts = sorted(pruned_energy)
    objective = [pruned_energy[g] * (1.0 + beta * np.log2(g)) for g in counts]
    best = min(objective)
    return next(g for g, value in zip(counts, objective) if value <= best * (1 + 1e-12))


NOISE_GUARD = 0.03


def fast_counts(times: dict[int, float], dense: float, slack: float) -> list[int]:
    """Counts measured faster than ``dense`` and within ``1 + slack`` of the fastest of them.

    "Faster" means by more than ``NOISE_GUARD`` (3%): a layer whose best variant is within
    timing noise of the dense Conv is better left whole, since its gathers cost time too.
    """
    allowed = {g: t for g, t in times.items() if t <= dense * (1.0 - NOISE_GUARD)}
    if not allowed:
        return []
    fastest = min(allowed.values())
    return sorted(g for g, t in allowed.items() if t <= fastest * (1.0 + slack))


def none_fast_reason(times: dict[int, float], dense: float) -> str:
    """Why :func:`fast_counts` let no count through, for a layer left whole: every variant
    measured slower than the dense Conv, or the fastest faster by less than the noise margin."""
    best = min(times, key=times.__getitem__)
    figures = f"fastest G={best}: {times[best] * 1e6:.0f} us, dense Conv: {dense * 1e6:.0f} us"
    if times[best] > dense:
        return f"every grouped variant is slower here ({figures})"
    return f"no grouped variant measured clearly faster ({figures}, within the {NOISE_GUARD:.0%} noise margin)"
