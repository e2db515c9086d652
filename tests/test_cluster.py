import numpy as np
import pytest

from onnx_gkp.cluster import balanced_kmeans


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
