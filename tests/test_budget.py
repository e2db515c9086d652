"""The allocator on synthetic cost tables: it meets the budget, and is optimal (brute force)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from onnx_gkp.policy.knapsack import Infeasible, Option, allocate


def _random_layers(rng: np.random.Generator, count: int, options: int) -> list[list[Option]]:
    """Integer costs; the first option of each layer is 'whole' (quality 0, the largest cost)."""
    layers = []
    for _ in range(count):
        whole = int(rng.integers(20, 60))
        others = [Option(1, 1, float(rng.uniform(0.01, 1.0)), int(rng.integers(1, whole))) for _ in range(options - 1)]
        layers.append([Option(8, 1, 0.0, whole), *others])
    return layers


def _brute_force(layers: list[list[Option]], budget: float) -> float:
    best = np.inf
    for choice in itertools.product(*layers):
        if sum(o.cost for o in choice) <= budget:
            best = min(best, sum(o.quality for o in choice))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_optimal_and_within_budget_on_small_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = _random_layers(rng, int(rng.integers(1, 5)), int(rng.integers(2, 5)))
    least = sum(min(o.cost for o in options) for options in layers)
    most = sum(max(o.cost for o in options) for options in layers)
    budget = int(rng.integers(least, most + 1))
    chosen = allocate(layers, budget, resolution=budget)  # one unit per integer: exact
    picked = [layers[i][j] for i, j in enumerate(chosen)]
    assert sum(o.cost for o in picked) <= budget
    assert sum(o.quality for o in picked) == pytest.approx(_brute_force(layers, budget))


def test_real_valued_costs_never_overshoot() -> None:
    rng = np.random.default_rng(7)
    layers = [
        [Option(1, 1, float(q), float(c)) for q, c in zip(rng.uniform(0, 1, 6), rng.uniform(1e6, 9e6, 6))]
        for _ in range(60)
    ]
    least = sum(min(o.cost for o in options) for options in layers)
    for budget in np.linspace(least, least * 1.5, 7):
        chosen = allocate(layers, float(budget))
        assert sum(layers[i][j].cost for i, j in enumerate(chosen)) <= budget


def test_spends_the_budget_where_quality_is_cheap() -> None:
    # Two layers that can each save 10 units; the budget allows one saving: the cheaper one.
    layers = [[Option(4, 1, 0.0, 20), Option(2, 1, 0.5, 10)], [Option(4, 1, 0.0, 20), Option(2, 1, 0.1, 10)]]
    assert allocate(layers, 30, resolution=30) == [0, 1]
    assert allocate(layers, 40, resolution=40) == [0, 0]
    assert allocate(layers, 20, resolution=20) == [1, 1]


def test_infeasible_budget_is_refused() -> None:
    with pytest.raises(Infeasible, match="most pruning possible"):
        allocate([[Option(4, 1, 0.0, 20), Option(2, 1, 0.5, 10)]], 5)


def test_budget_at_the_least_possible_takes_the_cheapest_options() -> None:
    # Rounded up, every option of these layers costs one unit more than it is: only the exact
    # least fits, and it is what the allocator returns.
    layers = [[Option(4, 1, 0.0, 10.5), Option(2, 1, 0.5, 5.5), Option(1, 1, 0.9, 5.25)] for _ in range(3)]
    least = 3 * 5.25
    chosen = allocate(layers, least, resolution=4)
    assert chosen == [2, 2, 2]
