"""Grouped-kernel scores and selection inside one filter group.

For a filter group ``S`` the grouped kernel at input channel ``c`` is the vector
``v_c = W[S, c].ravel()``. Two criteria score it:

* L2 norm ``||v_c||``: a small kernel contributes little to the group's outputs.
* Geometric-median distance (FPGM): ``d_c = sum_c' ||v_c - v_c'||``. The kernel nearest the
  geometric median of its peers is the one best stood in for by the others, so a small
  ``d_c`` marks it redundant.

``combined`` ranks by the kernel's energy discounted by its redundancy:
``||v_c||^2 * d_c / mean(d)``. Energy is what the group count choice scores (the pruned
energy), and the relative geometric-median distance scales it down for kernels the others
can stand in for. On the bundled model this beat the plain product ``||v|| * d`` at every
ratio tried (``docs/method.md``). Every group keeps the ``m`` best channels, ties broken by
channel index.

``random`` draws the scores from a generator seeded by the caller: the floor every criterion
has to beat in the quality benchmark, not a choice for users.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

Criterion = Literal["combined", "l2", "gm", "random"]
CRITERIA: tuple[str, ...] = ("combined", "l2", "gm", "random")


def grouped_kernels(weight: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """``[C_in, n * prod(k)]`` matrix whose row ``c`` is the grouped kernel ``W[filters, c]``."""
    block = weight[filters].astype(np.float64, copy=False)
    return np.swapaxes(block, 0, 1).reshape(weight.shape[1], -1)


def kernel_scores(kernels: np.ndarray, criterion: Criterion = "combined", seed: Sequence[int] = (0,)) -> np.ndarray:
    """Importance of each grouped kernel (row); higher means keep. ``seed`` only feeds ``random``."""
    if criterion == "random":
        return np.random.default_rng(list(seed)).random(kernels.shape[0])
    l2 = np.linalg.norm(kernels, axis=1)
    if criterion == "l2":
        return l2
    gm = euclidean_distances(kernels).sum(axis=1)
    if criterion == "gm":
        return gm
    if criterion != "combined":
        raise ValueError(f"unknown kernel criterion {criterion!r}; choose from {CRITERIA}")
    return l2**2 * (gm / max(gm.mean(), 1e-30))


def select_channels(scores: np.ndarray, keep: int) -> np.ndarray:
    """Sorted indices of the ``keep`` highest scores (stable: lower index wins a tie)."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:keep])
