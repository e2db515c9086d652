import numpy as np
import pytest

from onnx_gkp.layer.cluster import balanced_assignment, balanced_kmeans, refine_for_retention


@pytest.mark.parametrize("count,groups", [(12, 1), (12, 3), (12, 4), (32, 8), (12, 12)])
def test_groups_are_equal_and_partition(count: int, groups: int) -> None:
    points = np.random.default_rng(0).standard_normal((count, 5))
    clusters = balanced_kmeans(points, groups, seed=3)
    assert len(clusters) == groups
    assert {len(c) for c in clusters} == {count // groups}
    assert sorted(np.concatenate(clusters).tolist()) == list(range(count))


def test_deterministic_for_a_seed() -> None:
    points = np.random.default_rng(1).standard_normal((64, 9))
    first = balanced_kmeans(points, 8, seed=5)
    again = balanced_kmeans(points, 8, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_recovers_separated_equal_clusters() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0]])
    truth = rng.permutation(np.repeat(np.arange(4), 6))
    points = centres[truth] + 0.1 * rng.standard_normal((24, 2))
    clusters = balanced_kmeans(points, 4, seed=0)
    assert sorted(sorted(c.tolist()) for c in clusters) == sorted(
        sorted(np.flatnonzero(truth == g).tolist()) for g in range(4)
    )


def test_balances_unequal_natural_clusters() -> None:
    # 9 points near one centre, 3 near another: equal groups must still come out 6 and 6.
    points = np.concatenate([np.zeros((9, 2)), np.full((3, 2), 5.0)]) + 0.01 * np.arange(24).reshape(12, 2)
    clusters = balanced_kmeans(points, 2, seed=0)
    assert [len(c) for c in clusters] == [6, 6]
    assert any(set(c.tolist()) >= {9, 10, 11} for c in clusters)


def test_rejects_a_count_that_does_not_divide() -> None:
    with pytest.raises(ValueError):
        balanced_kmeans(np.zeros((10, 2)), 3)


def _retained(energy: np.ndarray, clusters: list, keep: int) -> float:
    total = 0.0
    for members in clusters:
        column = energy[members].sum(axis=0)
        total += float(np.sort(column)[::-1][:keep].sum())
    return total


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_refinement_keeps_equal_groups_and_never_loses_energy(groups: int) -> None:
    energy = np.random.default_rng(groups).random((32, 12)) ** 3
    start = balanced_kmeans(energy, groups, seed=0)
    refined = refine_for_retention(energy, start, keep=5)
    assert {len(c) for c in refined} == {32 // groups}
    assert sorted(np.concatenate(refined).tolist()) == list(range(32))
    assert _retained(energy, refined, 5) >= _retained(energy, start, 5) - 1e-9


def test_refinement_finds_disjoint_channel_families() -> None:
    # Filters 0-3 live on channels 0-2, filters 4-7 on channels 3-5; start from a bad split.
    energy = np.zeros((8, 6))
    energy[:4, :3] = 1.0
    energy[4:, 3:] = 1.0
    bad = [np.array([0, 1, 2, 4]), np.array([3, 5, 6, 7])]
    refined = refine_for_retention(energy, bad, keep=3)
    assert sorted(c.tolist() for c in refined) == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("count,groups,seed", [(12, 3, 0), (64, 4, 1), (96, 8, 2), (128, 16, 3), (60, 2, 4)])
def test_balanced_assignment_is_optimal(count: int, groups: int, seed: int) -> None:
    from scipy.optimize import linear_sum_assignment

    cost = np.random.default_rng(seed).random((count, groups)) ** 2
    labels = balanced_assignment(cost)
    assert np.bincount(labels, minlength=groups).tolist() == [count // groups] * groups
    # The same problem as an assignment of filters to count//groups copies of each group.
    rows, slots = linear_sum_assignment(np.repeat(cost, count // groups, axis=1))
    assert cost[np.arange(count), labels].sum() == pytest.approx(
        cost[rows, slots // (count // groups)].sum(), rel=1e-12
    )


def test_balanced_assignment_keeps_an_optimal_start() -> None:
    cost = np.random.default_rng(5).random((32, 4))
    best = balanced_assignment(cost)
    assert np.array_equal(balanced_assignment(cost, best), best)
