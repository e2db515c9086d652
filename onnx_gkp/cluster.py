"""Equal-size filter clustering: k-means++ seeding, then exact balanced assignment.

A grouped convolution needs every group to hold the same number of filters ``n = C_out / G``.
Plain k-means gives unequal clusters, so each Lloyd step replaces the nearest-centre rule by a
linear assignment problem: every centre is offered ``n`` slots, and ``linear_sum_assignment``
finds the assignment of filters to slots with the least total squared distance. Centres are
then moved to the mean of their members; the loop stops when the assignment repeats or after
``max_iter`` steps. ``refine_for_retention`` then moves filters between the equal groups
towards what grouped-kernel pruning keeps. Plain numpy, scikit-learn and scipy: nothing here
knows about ONNX.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import kmeans_plusplus

from .kernels import select_channels


def _clusters(labels: np.ndarray, groups: int) -> list[np.ndarray]:
    """Members of each label, clusters ordered by their smallest member (a canonical form)."""
    return sorted((np.flatnonzero(labels == g) for g in range(groups)), key=lambda members: int(members[0]))


def balanced_kmeans(
    points: np.ndarray, groups: int, seed: int = 0, max_iter: int = 30
) -> list[np.ndarray]:
    """Split the rows of ``points`` into ``groups`` equal clusters.

    Returns ``groups`` sorted index arrays; the clusters are ordered by their smallest member,
    so the result is a canonical function of the partition (and deterministic for a seed).
    """
    count = points.shape[0]
    if groups < 1 or count % groups:
        raise ValueError(f"{groups} groups do not divide {count} points")
    size = count // groups
    if groups == 1:
        return [np.arange(count)]
    if groups == count:
        return [np.array([i]) for i in range(count)]
    data = points.astype(np.float64, copy=False)
    centres, _ = kmeans_plusplus(data, groups, random_state=seed)
    labels = np.full(count, -1)
    for _ in range(max_iter):
        cost = cdist(data, centres, "sqeuclidean")
        # Column j of the slot matrix is a copy of centre j // size.
        _, slots = linear_sum_assignment(np.repeat(cost, size, axis=1))
        new_labels = slots // size
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centres = np.stack([data[labels == g].mean(axis=0) for g in range(groups)])
    return _clusters(labels, groups)


def refine_for_retention(
    energy: np.ndarray, clusters: list[np.ndarray], keep: int, max_iter: int = 20
) -> list[np.ndarray]:
    """Move filters between equal groups so the kept grouped kernels hold more energy.

    ``energy[f, c] = ||W[f, c]||^2``. Alternates two exact steps: each group keeps the ``keep``
    channels with the most energy summed over its filters; then every filter goes to the
    group whose kept channels hold most of its own energy, by a balanced assignment. Each
    step is optimal given the other, so the retained energy never falls; stops when it no
    longer rises (or after ``max_iter`` rounds).
    """
    count, groups = energy.shape[0], len(clusters)
    if groups in (1, count):
        return clusters
    size = count // groups
    labels = np.empty(count, dtype=np.int64)
    for g, members in enumerate(clusters):
        labels[members] = g
    retained = -np.inf
    for _ in range(max_iter):
        kept = np.zeros((groups, energy.shape[1]))
        for g in range(groups):
            kept[g, select_channels(energy[labels == g].sum(axis=0), keep)] = 1.0
        gain = energy @ kept.T
        current = float(gain[np.arange(count), labels].sum())
        if current <= retained * (1 + 1e-12):
            break
        retained = current
        _, slots = linear_sum_assignment(-np.repeat(gain, size, axis=1))
        labels = slots // size
    return _clusters(labels, groups)
