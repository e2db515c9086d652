import numpy as np
import pytest

from onnx_gkp.layer.group_count import candidate_counts, choose_group_count, fast_counts
from onnx_gkp.layer.planner import PlanOptions, plan_layer


def test_candidates_are_bounded_divisors() -> None:
    assert candidate_counts(24, 16) == [1, 2, 3, 4, 6, 8, 12]
    assert candidate_counts(7, 16) == [1, 7]
    assert candidate_counts(64, 4) == [1, 2, 4]


def test_quality_only_takes_the_least_pruned_energy() -> None:
    assert choose_group_count({1: 0.4, 2: 0.35, 4: 0.3, 8: 0.29}, beta=0.0) == 8


def test_a_doubling_must_pay_for_itself() -> None:
    # 2 -> 4 saves 14% (taken), 4 -> 8 saves 3% (not worth a 5% price).
    energies = {1: 0.50, 2: 0.35, 4: 0.30, 8: 0.29}
    assert choose_group_count(energies, beta=0.05) == 4


def test_ties_go_to_the_smaller_count() -> None:
    assert choose_group_count({1: 0.3, 2: 0.3, 4: 0.3}, beta=0.0) == 1
    assert choose_group_count({1: 0.0, 4: 0.0}, beta=0.05) == 1


@pytest.mark.parametrize("beta", [0.0, 0.05, 1.0])
def test_choice_is_a_candidate(beta: float) -> None:
    energies = {1: 0.5, 3: 0.45, 5: 0.2, 15: 0.1}
    assert choose_group_count(energies, beta) in energies


def test_fast_counts_never_slower_than_dense_and_near_the_fastest() -> None:
    times = {1: 1.00, 2: 1.04, 4: 1.20, 8: 3.0}
    assert fast_counts(times, dense=2.0, slack=0.05) == [1, 2]
    assert fast_counts(times, dense=2.0, slack=0.25) == [1, 2, 4]
    assert fast_counts(times, dense=1.02, slack=10.0) == []  # within the noise guard of dense
    assert fast_counts({1: 2.5, 2: 1.5}, dense=2.0, slack=0.0) == [2]


def test_planner_leaves_a_layer_whole_when_every_variant_is_slower() -> None:
    weight = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    options = PlanOptions(ratio=0.5)
    assert plan_layer(weight, options, {1: 2.0, 2: 3.0, 4: 4.0, 8: 5.0}, dense_time=1.0) is None
    plan = plan_layer(weight, options, {1: 0.5, 2: 0.51, 4: 0.9, 8: 5.0}, dense_time=1.0)
    assert plan is not None and plan.groups in (1, 2) and set(plan.candidates) == {1, 2}
    quality = plan_layer(weight, options)
    assert quality is not None and set(quality.candidates) == {1, 2, 4, 8}


def test_measured_costs_drive_the_pass(tmp_path) -> None:
    """A cost table that makes every grouped variant slower leaves every layer whole."""
    from conftest import CHAIN, CHAIN_WEIGHTS, make_model

    import onnx_gkp
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.cost.table import CostTable

    model = make_model(CHAIN, CHAIN_WEIGHTS)
    path = tmp_path / "costs.json"
    table = CostTable(1, path)
    for site in analyse(model).sites:
        c_out = site.weight.shape[0]
        table.record(site.geometry, site.geometry.dense, 1e-3)
        for g in candidate_counts(c_out, 16):
            for gathered in (True, False):
                table.record(site.geometry, (g, site.weight.shape[1] // 2, gathered), 2e-3)
    table.save()
    pruned, report = onnx_gkp.prune(model, ratio=0.5, cost_cache=path, latency_runs=0)
    assert report.layers == []
    assert all("slower" in s.reason for s in report.skipped)
    assert not any(n.op_type == "Gather" for n in pruned.graph.node)


@pytest.mark.parametrize(
    "fastest, says, not_says",
    [
        (0.985e-3, "no grouped variant measured clearly faster", "slower"),  # faster, but inside the 3% margin
        (1.0e-3, "no grouped variant measured clearly faster", "slower"),  # a tie
        (1.2e-3, "every grouped variant is slower here", "margin"),
    ],
)
def test_a_layer_left_whole_says_why_truly(tmp_path, fastest: float, says: str, not_says: str) -> None:
    """A layer whose best variant is faster by less than the noise margin was said to
    have every variant slower. Each skip reason gives the fastest count and the dense time."""
    from conftest import make_model

    import onnx_gkp
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.cost.table import CostTable

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    one (float[1,16,10,10] x) => (float[1,16,10,10] y) {
      y = Conv <pads=[1,1,1,1]> (x, w)
    }
    """
    model = make_model(text, {"w": (16, 16, 3, 3)})
    path = tmp_path / "costs.json"
    table = CostTable(1, path)
    (site,) = analyse(model).sites
    table.record(site.geometry, site.geometry.dense, 1e-3)
    for g in candidate_counts(16, 16):
        table.record(site.geometry, (g, 12, True), fastest * (1 + 0.1 * (g > 1)))
    table.save()
    _, report = onnx_gkp.prune(model, ratio=0.25, cost_cache=path, latency_runs=0)
    assert report.layers == [] and len(report.skipped) == 1
    reason = report.skipped[0].reason
    assert reason.startswith(says) and not_says not in reason, reason
    assert f"fastest G=1: {fastest * 1e6:.0f} us" in reason and "dense Conv: 1000 us" in reason
