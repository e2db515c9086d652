"""Equal-size filter clustering: k-means++ seeding, then exact balanced assignment.

A grouped convolution needs every group to hold the same number of filters ``n = C_out / G``.
Plain k-means gives unequal clusters, so each Lloyd step replaces the nearest-centre rule by a
balanced assignment: the least-cost assignment of filters to centres with exactly ``n``
filters each (:func:`balanced_assignment`). Centres are then moved to the mean of their
members; the loop stops when the cost stops falling. ``refine_for_retention`` then moves
filters between the equal groups towards what grouped-kernel pruning keeps. Plain numpy,
scikit-learn and scipy: nothing here knows about ONNX.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import kmeans_plusplus

from .kernels import select_channels


def _clusters(labels: np.ndarray, groups: int) -> list[np.ndarray]:
    """Members of each label, clusters ordered by their smallest member (a canonical form)."""
    return sorted((np.flatnonzero(labels == g) for g in range(groups)), key=lambda members: int(members[0]))


def _negative_cycle(moves: np.ndarray, tol: float) -> list[int] | None:
    """A cycle of groups whose summed move costs is negative (Bellman-Ford), or None."""
    groups = len(moves)
    dist, pred, last = np.zeros(groups), np.full(groups, -1), -1
    for _ in range(groups):
        through = dist[:, None] + moves
        best_from = through.argmin(axis=0)
        best = through[best_from, np.arange(groups)]
        improved = best < dist - tol
        if not improved.any():
            return None
        dist, pred = np.where(improved, best, dist), np.where(improved, best_from, pred)
        last = int(np.flatnonzero(improved)[0])
    for _ in range(groups):  # walk back far enough to stand on the cycle
        last = int(pred[last])
    cycle, node = [last], int(pred[last])
    while node != last:
        cycle.append(node)
        node = int(pred[node])
    return cycle[::-1]


def _greedy_start(cost: np.ndarray, size: int) -> np.ndarray:
    """A balanced assignment that lets the filters with most to lose choose first."""
    count, groups = cost.shape
    ranked = np.sort(cost, axis=1)
    regret = ranked[:, 1] - ranked[:, 0] if groups > 1 else np.zeros(count)
    preferences = np.argsort(cost, axis=1, kind="stable")
    room = np.full(groups, size)
    labels = np.empty(count, dtype=np.int64)
    for f in np.argsort(-regret, kind="stable"):
        g = next(int(g) for g in preferences[f] if room[g])
        labels[f] = g
        room[g] -= 1
    return labels


def balanced_assignment(cost: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Labels of least total ``cost[f, label]`` with every label used ``count / groups`` times.

    A transportation problem with few sinks. From a balanced start (``start``, else a greedy
    one), repeatedly move one filter along each edge of a negative cycle of the group graph,
    whose edge ``a -> b`` costs the cheapest move of a filter from ``a`` to ``b``. No such
    cycle is left exactly when the assignment is optimal. For the thousands of filters of
    large layers this is several times faster than ``linear_sum_assignment`` on the
    ``count x count`` slot matrix, and warm starts (the previous round's labels) need only a
    few cycles.
    """
    count, groups = cost.shape
    size = count // groups
    labels = _greedy_start(cost, size) if start is None else np.array(start, dtype=np.int64)
    rows = np.arange(count)
    tol = 1e-12 * max(1.0, float(np.abs(cost).max()))
    while True:
        members = np.argsort(labels, kind="stable").reshape(groups, size)  # equal groups: a grid
        delta = (cost - cost[rows, labels][:, None])[members]  # [group, member, target]
        cheapest = delta.argmin(axis=1)  # [group, target]
        moves = np.take_along_axis(delta, cheapest[:, None, :], axis=1)[:, 0, :]
        np.fill_diagonal(moves, 0.0)
        cycle = _negative_cycle(moves, tol)
        if cycle is None:
            return labels
        for a, b in zip(cycle, cycle[1:] + cycle[:1]):
            labels[members[a, cheapest[a, b]]] = b


def balanced_kmeans(
    points: np.ndarray, groups: int, seed: int = 0, max_iter: int = 30, tol: float = 1e-3
) -> list[np.ndarray]:
    """Split the rows of ``points`` into ``groups`` equal clusters.

    Lloyd steps stop once the total spread falls by less than ``tol`` (relative) per step.

    Returns ``groups`` sorted index arrays; the clusters are ordered by their smallest member,
    so the result is a canonical function of the partition (and deterministic for a seed).
    """
    count = points.shape[0]
    if groups < 1 or count % groups:
        raise ValueError(f"{groups} groups do not divide {count} points")
    if groups == 1:
        return [np.arange(count)]
    if groups == count:
        return [np.array([i]) for i in range(count)]
    data = points.astype(np.float64, copy=False)
    centres, _ = kmeans_plusplus(data, groups, random_state=seed)
    labels, spread = None, np.inf
    for _ in range(max_iter):
        cost = cdist(data, centres, "sqeuclidean")
        labels = balanced_assignment(cost, labels)
        current = float(cost[np.arange(count), labels].sum())
        if current >= spread * (1 - tol):
            break
        spread = current
        centres = np.stack([data[labels == g].mean(axis=0) for g in range(groups)])
    return _clusters(labels, groups)


def refine_for_retention(
    energy: np.ndarray, clusters: list[np.ndarray], keep: int, max_iter: int = 20, tol: float = 1e-3
) -> list[np.ndarray]:
    """Move filters between equal groups so the kept grouped kernels hold more energy.

    ``energy[f, c] = ||W[f, c]||^2``. Alternates two exact steps: each group keeps the ``keep``
    channels with the most energy summed over its filters; then every filter goes to the
    group whose kept channels hold most of its own energy, by a balanced assignment. Each
    step is optimal given the other, so the retained energy never falls; stops when a round
    adds less than ``tol`` of it (relative), or after ``max_iter`` rounds.
    """
    count, groups = energy.shape[0], len(clusters)
    if groups in (1, count):
        return clusters
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
        if current <= retained * (1 + tol):
            break
        retained = current
        labels = balanced_assignment(-gain, labels)
    return _clusters(labels, groups)
