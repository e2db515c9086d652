"""Trimming carried back through depthwise Convs (MobileNet-class inverted residuals).

expand 1x1 -> BN -> Clip (Relu6) -> depthwise 3x3 -> BN -> Clip -> project 1x1, built by
depthwise_models.py. Pruning the projection with G = 1 leaves hidden channels no kept kernel
reads: neither the depthwise Conv nor the expand Conv may compute them, and the result must
still equal the masked reference.
"""

from __future__ import annotations

import math

import onnx
import pytest
from conftest import assert_close, feeds_for, reference_from_report, run
from depthwise_models import C_IN, C_OUT, HIDDEN, SIDE, _block

import onnx_gkp
from onnx_gkp.analyse.sites import analyse


def _prune(model: onnx.ModelProto, include: str = "^project$") -> tuple[onnx.ModelProto, dict]:
    pruned, report = onnx_gkp.prune(model, ratio=0.25, groups=1, include=include, runtime_aware=False, latency_runs=0)
    data = report.to_dict()
    assert data["validation"]["passed"]
    feeds = feeds_for(model)
    assert_close(run(pruned, feeds), run(reference_from_report(model, data), feeds))
    return pruned, data


def _conv(model: onnx.ModelProto, name: str) -> tuple[list[int], int]:
    """A Conv's weight shape and group in ``model``, its weight an initializer or a Constant."""
    node = next(n for n in model.graph.node if n.name == name)
    tensors = {t.name: t for t in model.graph.initializer}
    tensors.update((n.output[0], n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant")
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return list(tensors[node.input[1]].dims), group


def _skip(data: dict, name: str) -> dict:
    return next(s for s in data["skipped"] if s["node"] == name)


MACS = {"expand": HIDDEN * C_IN * SIDE**2, "depthwise": HIDDEN * 9 * SIDE**2, "project": C_OUT * HIDDEN * SIDE**2}
KEPT = 24  # of the projection's 32 input channels at ratio 0.25


def _check_trimmed(pruned: onnx.ModelProto, data: dict, stem_channels: int = C_IN) -> None:
    layer = data["layers"][-1]
    assert layer["node"] == "project" and layer["kept_per_group"] == KEPT
    dead = sorted(set(range(HIDDEN)) - set(layer["kept_channels"][0]))
    assert len(dead) == HIDDEN - KEPT
    assert _conv(pruned, "expand") == ([KEPT, stem_channels, 1, 1], 1)
    assert _conv(pruned, "depthwise") == ([KEPT, 1, 3, 3], KEPT)
    assert not any(n.op_type == "Gather" for n in pruned.graph.node), "the projection's gather folded into the chain"
    for name in ("depthwise", "expand"):  # both left out of the sites here
        assert list(_skip(data, name)["dead_filters"]) == dead
    assert _skip(data, "depthwise")["macs_after"] == MACS["depthwise"] * KEPT // HIDDEN
    expand_macs = HIDDEN * stem_channels * SIDE**2
    before = expand_macs + MACS["depthwise"] + MACS["project"]
    assert data["totals"]["conv_macs_before"] == before
    assert data["totals"]["conv_macs_after"] == (expand_macs + MACS["depthwise"] + MACS["project"]) * KEPT // HIDDEN


def test_projection_trims_the_depthwise_and_the_expand_conv() -> None:
    """Only the projection is pruned (--include): the expand Conv left out of the sites and the
    depthwise Conv stop computing the 8 hidden channels it no longer reads."""
    model = _block()
    analysis = analyse(model, include="^project$")
    (project,) = analysis.sites
    assert [model.graph.node[i].name for i in (project.source[0], *project.source[1])] == [
        "expand",
        "e_bn",
        "e_act",
        "depthwise",
        "d_bn",
        "d_act",
    ]
    assert [s.node for s in analysis.sources] == ["expand"]
    pruned, data = _prune(model)
    _check_trimmed(pruned, data)
    # BN statistics and biases follow the kept channels: no hidden-sized tensor is left.
    assert all(HIDDEN not in t.dims for t in pruned.graph.initializer)
    # expand weight and bias, two BNs, depthwise weight and bias, projection weight, 4 Clip bounds
    params = lambda n: n * (C_IN + 1) + 2 * 4 * n + n * (9 + 1) + C_OUT * n + 4  # noqa: E731
    compensated = C_OUT if data["layers"][0]["bias_delta"] is not None else 0  # a new projection bias
    assert data["totals"]["params_before"] == params(HIDDEN)
    assert data["totals"]["params_after"] == params(KEPT) + compensated


def test_expand_pruned_too_trims_through_the_depthwise_conv() -> None:
    """Both 1x1 Convs pruned with G = 1: the expand Conv's unread filters go (a layer's
    dead_filters) and the depthwise Conv's MACs fall with them."""
    model = _block()
    pruned, data = _prune(model, include="^(expand|project)$")
    assert [layer["node"] for layer in data["layers"]] == ["expand", "project"]
    dead = sorted(set(range(HIDDEN)) - set(data["layers"][1]["kept_channels"][0]))
    assert data["layers"][0]["dead_filters"] == dead
    assert list(_skip(data, "depthwise")["dead_filters"]) == dead
    assert _conv(pruned, "depthwise") == ([KEPT, 1, 3, 3], KEPT)
    expand_kept = data["layers"][0]["kept_per_group"]
    assert data["layers"][0]["macs_after"] == MACS["expand"] * expand_kept * KEPT // (C_IN * HIDDEN)
    assert data["totals"]["conv_macs_after"] == (
        data["layers"][0]["macs_after"] + MACS["depthwise"] * KEPT // HIDDEN + MACS["project"] * KEPT // HIDDEN
    )


def test_a_stem_with_too_few_input_channels_is_trimmed() -> None:
    """MobileNetV2's first block: the 3-channel stem is no site (too few input channels to
    prune) but is the projection's source all the same."""
    model = _block(stem_channels=3)
    pruned, data = _prune(model, include=None)
    assert "too few input channels" in _skip(data, "expand")["reason"]
    _check_trimmed(pruned, data, stem_channels=3)


def test_swish_and_hardswish_are_crossed() -> None:
    """Sigmoid-Mul (SiLU) after the expand BN and HardSwish after the depthwise BN."""
    model = _block("swish")
    (project,) = analyse(model, include="^project$").sites
    assert project.source is not None
    pruned, data = _prune(model)
    _check_trimmed(pruned, data)


def test_constant_node_parameters_are_trimmed_as_promised() -> None:
    """A depthwise weight and a per-channel scale from Constant nodes: analyse counts them as
    constants, so the rewrite must trim through them (the timing credit assumes it does)."""
    model = _block(constant_nodes=True)
    (project,) = analyse(model, include="^project$").sites
    assert project.source is not None
    pruned, data = _prune(model)
    _check_trimmed(pruned, data)


@pytest.mark.parametrize("reader", ["d_act", "d", "e_act"])
def test_no_trimming_when_the_hidden_channels_are_read_elsewhere(reader: str) -> None:
    """The depthwise output (or the expand's) is also a graph output's input: every hidden
    channel is still needed, so neither Conv shrinks and the gather stays."""
    model = _block(extra_reader=reader)
    (project,) = analyse(model, include="^project$").sites
    assert project.source is None
    pruned, data = _prune(model)
    assert _conv(pruned, "expand") == ([HIDDEN, C_IN, 1, 1], 1)
    assert _conv(pruned, "depthwise") == ([HIDDEN, 1, 3, 3], HIDDEN)
    assert [n.op_type for n in pruned.graph.node].count("Gather") == 1
    assert all(not s["dead_filters"] for s in data["skipped"])
    assert data["totals"]["conv_macs_after"] == MACS["expand"] + MACS["depthwise"] + MACS["project"] * KEPT // HIDDEN


def test_a_swish_whose_input_is_read_elsewhere_is_not_crossed() -> None:
    """``Mul(t, Sigmoid(t))`` with ``t`` read by a third node: t's channels are all needed."""
    model = _block("swish", extra_reader="e_bn")
    assert analyse(model, include="^project$").sites[0].source is None
    pruned, data = _prune(model)
    assert _conv(pruned, "expand") == ([HIDDEN, C_IN, 1, 1], 1)
    assert all(not s["dead_filters"] for s in data["skipped"])


def _recording_variants(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every variant the cost table is asked to time from now on, in order."""
    from onnx_gkp.cost.table import CostTable

    asked: list[tuple] = []
    times = CostTable.times

    def recording(self: CostTable, geometry: object, variants: list) -> dict:
        asked.extend(variants)
        return times(self, geometry, variants)

    monkeypatch.setattr(CostTable, "times", recording)
    return asked


def test_runtime_aware_times_the_projection_without_its_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (timed) mode: the expand Conv left out by --include is always trimmed by a
    G = 1 projection, so that variant is timed as the rewrite writes it, without the gather
    (and credited nothing more: the expand Conv is not timed). Whatever it then chooses, it
    validates."""
    asked = _recording_variants(monkeypatch)
    model = _block()
    pruned, report = onnx_gkp.prune(model, ratio=0.25, include="^project$", latency_runs=0)
    assert (1, KEPT, False) in asked and (1, KEPT, True) not in asked
    data = report.to_dict()
    assert data["validation"]["passed"]
    feeds = feeds_for(model)
    assert_close(run(pruned, feeds), run(reference_from_report(model, data), feeds))
    assert math.isfinite(data["totals"]["conv_macs_after"])


def test_an_expand_conv_a_ratio_leaves_whole_is_still_trimmed_so_its_projection_is_timed_without_a_gather(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Per-layer ratios (``--keep``) leave a fragile expand Conv whole and prune its projection:
    the rewrite still trims the expand Conv, so the projection's ``G = 1`` is timed without the
    gather (it was timed with one, measured no faster than dense and left whole on MobileNetV2)."""
    from onnx_gkp.context import Context
    from onnx_gkp.options import Options
    from onnx_gkp.policy.uniform import plan_sites

    asked = _recording_variants(monkeypatch)
    cache = tmp_path / "costs.json"
    context = Context.open(_block(), Options(ratio=0.25, cost_cache=cache), cache)
    assert {s.node for s in context.sites} >= {"expand", "project"}
    ratios = {s.node_index: 0.25 if s.node == "project" else 0.0 for s in context.sites}
    plan_sites(context, ratios)
    assert (1, KEPT, False) in asked and (1, KEPT, True) not in asked


def test_a_latency_budget_times_the_projection_as_written_and_credits_its_expand_conv() -> None:
    """``--target-latency``: the projection's ``G = 1`` options are the times of the variant
    without the gather, less the expand Conv's whole time in proportion to the channels dropped;
    its grouped options keep their gather. (Timed with the gather, MobileNetV2's projections
    looked slow and the budget cut the residual-stream readers instead.)"""
    from onnx_gkp.cost.table import CostTable
    from onnx_gkp.layer.planner import PlanOptions
    from onnx_gkp.policy.layer_options import layer_options

    sites = {s.node: s for s in analyse(_block()).sites}
    project = sites["project"]
    assert project.source is not None and project.source[0] == sites["expand"].node_index
    costs, options = CostTable(), PlanOptions(max_groups=4)
    trimmed = layer_options(project, options, "latency", 1.0, None, costs, source_time=1e-3)
    c_in = project.weight.shape[1]

    def timed(variant: tuple) -> float:
        return costs.times(project.geometry, [variant])[variant]

    assert trimmed[0].cost == timed(project.geometry.dense)
    for option in trimmed[1:]:
        if option.groups == 1:
            credited = timed((1, option.keep, False)) - 1e-3 * (1 - option.keep / c_in)
            assert option.cost == pytest.approx(max(credited, 0.0))
        else:
            assert option.cost == pytest.approx(timed((option.groups, option.keep, True)))
    assert any(o.groups == 1 for o in trimmed[1:]), "credited the expand Conv's time, G = 1 beats dense"
    plain = layer_options(project, options, "latency", 1.0, None, costs)  # no source: every variant gathered
    assert all(o.cost == pytest.approx(timed((o.groups, o.keep, True))) for o in plain[1:])


@pytest.mark.parametrize(
    "share, saved",
    [
        (0.5, 0.25),  # saves more than half the proportional share: credited in proportion (1 - 24/32)
        (0.9, 0.1),  # saves less than half of it: credited what was measured
        (1.41, -0.41),  # slower with fewer filters (int8 kernels off their block size): charged
    ],
)
def test_a_trimmed_source_is_credited_what_it_was_measured_to_save_where_that_is_far_less(
    share: float, saved: float
) -> None:
    """The expand Conv a G = 1 projection trims is timed again with only the kept filters. On
    the bundled model in int8 a 16-filter Conv took 1.41x its whole time at 8 filters; credited
    half its time instead, the pass pruned a stage that made the model slower than INT8 alone."""
    from dataclasses import replace

    from onnx_gkp.cost.table import CostTable, credited
    from onnx_gkp.layer.planner import PlanOptions
    from onnx_gkp.policy.layer_options import layer_options
    from onnx_gkp.policy.uniform import candidate_times

    assert credited(1.0, 1.0, 24, 32) == pytest.approx(0.75)
    sites = {s.node: s for s in analyse(_block()).sites}
    project, expand = sites["project"], sites["expand"]
    options = PlanOptions(ratio=0.25, max_groups=1)
    keep = options.kept(HIDDEN)
    costs = CostTable()
    fewer = replace(expand.geometry, weight_shape=(keep, *expand.geometry.weight_shape[1:]))
    costs.record(expand.geometry, expand.geometry.dense, 1e-3)
    costs.record(fewer, fewer.dense, share * 1e-3)
    costs.record(project.geometry, project.geometry.dense, 1e-3)
    costs.record(project.geometry, (1, keep, False), 0.8e-3)
    assert costs.trimmed_share(expand.geometry, keep) == pytest.approx(share)
    times, dense = candidate_times(project, options, costs, (expand, 1e-3))
    assert dense == 1e-3 and times[1] == pytest.approx(0.8e-3 - saved * 1e-3)
    # The latency budget's options are credited the same way, each kept count by its own timing.
    budget = layer_options(
        project, options, "latency", 1.0, None, costs, source_time=1e-3, source_geometry=expand.geometry
    )
    assert budget[0].cost == 1e-3
    for option in budget[1:]:
        variant = (1, option.keep, False)
        share_at = costs.trimmed_share(expand.geometry, option.keep)
        assert option.cost == pytest.approx(
            credited(costs.times(project.geometry, [variant])[variant], 1e-3, option.keep, HIDDEN, share_at)
        )
    assert (keep in {o.keep for o in budget}) == (saved > -0.2), "charged above its dense time, 24 kept is no option"


def test_the_allowance_picks_the_fastest_ratio_counting_the_trimmed_source() -> None:
    """``--keep`` gives each layer the fastest ratio within the allowance: the projection's time
    at each ratio is credited (or charged) what its expand Conv saves whole, so a ratio whose
    kept count runs the expand Conv slower (int8 off the block size) is not the fastest."""
    from dataclasses import replace

    from onnx_gkp.cost.table import CostTable
    from onnx_gkp.layer.planner import PlanOptions
    from onnx_gkp.policy.curves import GRID, ratios_within
    from onnx_gkp.policy.uniform import grid_times

    sites = analyse(_block()).sites
    named = {s.node: s for s in sites}
    project, expand = named["project"], named["expand"]
    options, costs = PlanOptions(), CostTable()
    keeps = [options.kept(HIDDEN, r) for r in GRID]
    slow = keeps[-1]  # the deepest ratio: the fastest projection, but its expand Conv runs 1.5x
    for site in sites:
        costs.record(site.geometry, site.geometry.dense, 1e-3)
    for keep in set(keeps):
        costs.record(project.geometry, (1, keep, False), 1e-3 * keep / HIDDEN)
        fewer = replace(expand.geometry, weight_shape=(keep, *expand.geometry.weight_shape[1:]))
        costs.record(fewer, fewer.dense, 1.5e-3 if keep == slow else 1e-3 * keep / HIDDEN)
    times = grid_times(sites, costs, options)[project.node_index]
    assert times[-1] == pytest.approx(1e-3 * slow / HIDDEN + 0.5e-3)
    assert times[0] == pytest.approx(max(1e-3 * keeps[0] / HIDDEN - 1e-3 * (1 - keeps[0] / HIDDEN), 0.0))
    everything = {project.node_index: tuple(0.0 for _ in GRID)}
    assert ratios_within(everything, 0.0, {project.node_index: times})[project.node_index] == GRID[-2]
