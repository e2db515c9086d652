import numpy as np
import pytest

from onnx_gkp.layer.kernels import grouped_kernels, kernel_scores, select_channels


def test_grouped_kernels_layout() -> None:
    weight = np.arange(4 * 3 * 2).reshape(4, 3, 2).astype(np.float32)
    rows = grouped_kernels(weight, np.array([1, 3]))
    assert rows.shape == (3, 4)
    np.testing.assert_array_equal(rows[2], np.concatenate([weight[1, 2], weight[3, 2]]))


def test_l2_keeps_the_largest_kernels() -> None:
    kernels = np.diag([1.0, 5.0, 0.5, 3.0])
    keep = select_channels(kernel_scores(kernels, "l2"), 2)
    np.testing.assert_array_equal(keep, [1, 3])


def test_geometric_median_prunes_the_central_kernel() -> None:
    # Equal norms, so L2 cannot tell them apart; the kernel at angle 0 sits at the median.
    angles = np.radians([10.0, -20.0, 0.0, 20.0, -10.0])
    kernels = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scores = kernel_scores(kernels, "gm")
    assert np.argmin(scores) == 2
    np.testing.assert_array_equal(select_channels(scores, 4), [0, 1, 3, 4])


def test_combined_is_energy_discounted_by_redundancy() -> None:
    kernels = np.random.default_rng(0).standard_normal((6, 4))
    l2, gm = kernel_scores(kernels, "l2"), kernel_scores(kernels, "gm")
    np.testing.assert_allclose(kernel_scores(kernels), l2**2 * gm / gm.mean())


def test_combined_drops_the_redundant_of_two_equal_norms() -> None:
    # Kernels 0 and 1 have the same norm; 1 duplicates kernel 2, so it is the one to go.
    kernels = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.1, 0.0], [0.0, 0.0, 3.2]])
    assert kernel_scores(kernels, "l2")[0] == kernel_scores(kernels, "l2")[1]
    np.testing.assert_array_equal(select_channels(kernel_scores(kernels), 3), [0, 2, 3])


def test_zero_kernels_go_first_and_ties_keep_lower_index() -> None:
    scores = np.array([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(select_channels(scores, 2), [0, 2])


def test_unknown_criterion_is_refused() -> None:
    with pytest.raises(ValueError):
        kernel_scores(np.ones((3, 2)), "bogus")  # type: ignore[arg-type]


def test_random_scores_follow_the_seed_and_ignore_the_weights() -> None:
    kernels = np.arange(40, dtype=float).reshape(8, 5)
    a = kernel_scores(kernels, "random", (0, 1))
    assert np.array_equal(a, kernel_scores(kernels * 0, "random", (0, 1)))
    assert not np.array_equal(a, kernel_scores(kernels, "random", (0, 2)))
    assert not np.array_equal(np.argsort(a), np.argsort(kernel_scores(kernels, "l2")))
