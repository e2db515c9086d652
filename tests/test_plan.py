import numpy as np
import pytest

from onnx_gkp.layer.planner import LayerPlan, PlanOptions, kept_count, plan_layer


def _weight(shape=(16, 12, 3, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_index_bookkeeping() -> None:
    plan = LayerPlan(filter_groups=((2, 0), (1, 3)), kept_channels=((0, 2), (1, 2)))
    np.testing.assert_array_equal(plan.filter_order, [2, 0, 1, 3])
    np.testing.assert_array_equal(plan.in_index, [0, 2, 1, 2])
    weight = np.arange(4 * 3).reshape(4, 3, 1).astype(np.float32)
    grouped = plan.grouped_weight(weight)
    assert grouped.shape == (4, 2, 1)
    np.testing.assert_array_equal(grouped[:, :, 0], [[6, 8], [0, 2], [4, 5], [10, 11]])
    mask = plan.keep_mask(3)
    np.testing.assert_array_equal(mask, [[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(plan.masked_weight(weight)[:, :, 0], weight[:, :, 0] * mask)


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_fixed_count_plan_is_valid(groups: int) -> None:
    weight = _weight()
    plan = plan_layer(weight, PlanOptions(ratio=0.5, groups=groups))
    assert plan.groups == groups
    assert plan.kept_per_group == kept_count(12, 0.5) == 6
    assert sorted(plan.filter_order.tolist()) == list(range(16))
    for kept in plan.kept_channels:
        assert list(kept) == sorted(set(kept)) and len(kept) == 6
    removed = np.sum(weight.astype(np.float64) ** 2) - np.sum(plan.masked_weight(weight).astype(np.float64) ** 2)
    assert plan.pruned_energy == pytest.approx(removed / np.sum(weight.astype(np.float64) ** 2))


def test_l2_group_keeps_its_strongest_channels() -> None:
    weight = _weight((4, 6, 1, 1)) * 0.01
    weight[:, [1, 4]] = 5.0
    plan = plan_layer(weight, PlanOptions(ratio=2 / 3, groups=1, criterion="l2"))
    assert plan.kept_channels == ((1, 4),)


def test_auto_picks_the_structure_that_is_there() -> None:
    # Two families of filters use disjoint input channels: G=2 prunes nothing of value.
    weight = np.zeros((8, 8, 3, 3), dtype=np.float32)
    rng = np.random.default_rng(0)
    weight[0::2, :4] = rng.standard_normal((4, 4, 3, 3))
    weight[1::2, 4:] = rng.standard_normal((4, 4, 3, 3))
    plan = plan_layer(weight, PlanOptions(ratio=0.5, groups="auto"))
    assert plan.groups == 2
    assert plan.pruned_energy == pytest.approx(0.0, abs=1e-12)
    assert sorted(plan.filter_groups) == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert set(plan.candidates) == {1, 2, 4, 8}


def test_deterministic_for_a_seed() -> None:
    weight = _weight((32, 16, 3, 3))
    a = plan_layer(weight, PlanOptions(ratio=0.5, groups=4, seed=7))
    b = plan_layer(weight, PlanOptions(ratio=0.5, groups=4, seed=7))
    assert a == b


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": 1.0}, {"ratio": -0.1}, {"groups": 0}, {"criterion": "x"}, {"max_groups": 0}, {"group_cost": -1}],
)
def test_bad_options_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PlanOptions(**kwargs)


@pytest.mark.parametrize("c_in", [12, 63, 64, 96, 100, 144, 360, 960])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.125, 0.25, 0.5, 0.75, 0.97])
def test_kept_counts_align_to_blocks_in_wide_layers(c_in: int, ratio: float) -> None:
    exact = kept_count(c_in, ratio)
    aligned = kept_count(c_in, ratio, 16)
    assert 1 <= aligned <= c_in
    if c_in < 64:  # one block would be a quarter of the layer or more: the exact count
        assert aligned == exact
    else:
        assert (aligned % 16 == 0 or aligned == c_in) and aligned >= 16  # never past the layer (360 -> 368 crashed)
        assert abs(aligned - (1 - ratio) * c_in) <= 8 or aligned == 16  # the nearest multiple
    assert PlanOptions(ratio=ratio, align=16).kept(c_in) == aligned
    assert PlanOptions(ratio=ratio, align=1).kept(c_in) == exact


def test_a_plan_keeps_the_aligned_count() -> None:
    plan = plan_layer(_weight((32, 96, 1, 1)), PlanOptions(ratio=0.125, groups=1))
    assert plan.kept_per_group == 80  # not 84: off the 16-channel blocks, measured slower than dense
    assert plan_layer(_weight((32, 96, 1, 1)), PlanOptions(ratio=0.125, groups=1, align=1)).kept_per_group == 84
    with pytest.raises(ValueError, match="align"):
        PlanOptions(align=0)


def test_a_ratio_that_rounds_to_every_channel_says_why() -> None:
    assert "multiples of 16" in PlanOptions(ratio=0.05).refusal(32, 64)
    assert PlanOptions(ratio=0.05, align=1).refusal(32, 64) is None
    assert "multiples" not in PlanOptions(ratio=0.01).refusal(32, 32)
