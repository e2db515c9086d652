"""Folding the output permutation forward: exact, and as few Gathers as the graph allows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_close, feeds_for, make_model, reference_from_report, run
from onnx import numpy_helper

import onnx_gkp

# c1's permuted output runs through BN, Relu, SiLU, a per-channel Mul and a depthwise Conv into
# the pruned c2 (composed gather) and the excluded dense c4 (weight permuted); it must be
# restored for the residual Add with c2 (a different order) and for the graph output r1;
# c3 meets a Concat.
FOLD = """
<ir_version: 8, opset_import: ["" : 17]>
fold (float[1,8,10,10] x) => (float[1,16,10,10] cat, float[1,16,10,10] r1, float[1,8,10,10] c4) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  bn1 = BatchNormalization (c1, s1, o1, m1, v1)
  r1 = Relu (bn1)
  sg = Sigmoid (r1)
  si = Mul (r1, sg)
  sc = Mul (si, k1)
  dw = Conv <pads=[1,1,1,1], group=16> (sc, wd, bd)
  c2 = Conv (dw, w2)
  a = Add (c2, r1)
  c3 = Conv <pads=[1,1,1,1]> (a, w3)
  cat = Concat <axis=1> (c3, x)
  c4 = Conv (si, w4)
}
"""
WEIGHTS = {
    "w1": (16, 8, 3, 3),
    "b1": (16,),
    "s1": (16,),
    "o1": (16,),
    "m1": (16,),
    "v1": (16,),
    "k1": (1, 16, 1, 1),
    "wd": (16, 1, 3, 3),
    "bd": (16,),
    "w2": (16, 16, 1, 1),
    "w3": (8, 16, 3, 3),
    "w4": (8, 16, 1, 1),
}


def _model() -> onnx.ModelProto:
    model = make_model(FOLD, WEIGHTS, seed=3)
    for tensor in model.graph.initializer:
        if tensor.name == "v1":  # a variance must be positive
            tensor.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(tensor)) + 0.5, "v1"))
    for i, node in enumerate(model.graph.node):
        node.name = node.output[0]
    return model


def _prune(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=4, exclude="^c4$", latency_runs=0)
    data = report.to_dict()
    assert data["validation"]["passed"]
    feeds = feeds_for(model)
    assert_close(run(pruned, feeds), run(reference_from_report(model, data), feeds))
    return pruned, data


def test_folded_graph_equals_masked_reference_with_fewer_gathers() -> None:
    model = _model()
    pruned, report = _prune(model)
    assert [l["node"] for l in report["layers"]] == ["c1", "c2", "c3"]
    assert all(l["groups"] == 4 for l in report["layers"])
    producers = {o: n for n in pruned.graph.node for o in n.output}
    conv1 = next(n for n in pruned.graph.node if n.name == "c1")
    consumers = [n.op_type for n in pruned.graph.node if conv1.output[0] in n.input]
    assert consumers == ["BatchNormalization"], "Conv -> BN must stay adjacent for onnxruntime's fusion"
    # 3 input gathers; restores only for r1 (graph output and residual), c2 (residual), c3 (Concat).
    gathers = [n for n in pruned.graph.node if n.op_type == "Gather"]
    assert report["totals"]["gathers_added"] == len(gathers) == 6
    restored = sorted(n.output[0] for n in gathers if n.name.endswith("gkp_restore"))
    assert restored == ["c2", "c3", "r1"]
    assert producers["c4"].op_type == "Conv", "the dense Conv reads the permuted tensor directly"
    assert [o.name for o in pruned.graph.output] == ["cat", "r1", "c4"]


def test_fold_is_optional_and_both_agree() -> None:
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.layer.planner import PlanOptions, plan_layer
    from onnx_gkp.rewrite.conv import rewrite

    model = _model()
    sites = [s for s in analyse(model, exclude="^c4$").sites]
    plans = [plan_layer(s.weight, PlanOptions(ratio=0.5, groups=4)) for s in sites]
    folded, plain = rewrite(model, sites, plans), rewrite(model, sites, plans, fold=False)
    assert folded.gathers == plain.gathers == 6  # here only where the restores sit differs

    def after_conv1(model: onnx.ModelProto) -> list[str]:
        conv1 = next(n for n in model.graph.node if n.name == "c1")
        return [n.op_type for n in model.graph.node if conv1.output[0] in n.input]

    assert after_conv1(folded.model) == ["BatchNormalization"] and after_conv1(plain.model) == ["Gather"]
    feeds = feeds_for(model)
    assert_close(run(folded.model, feeds), run(plain.model, feeds))


@pytest.mark.parametrize("constant_shape", [(16, 1, 1), (1, 16, 1, 1), (1,), (1, 1, 1, 1)])
def test_per_channel_constants_of_any_broadcast_shape(constant_shape: tuple[int, ...]) -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,6,6] x) => (float[1,8,6,6] y) {
      c1 = Conv <pads=[1,1,1,1]> (x, w1)
      m = Add (c1, k)
      h = HardSwish (m)
      y = Conv <pads=[1,1,1,1]> (h, w2)
    }
    """
    model = make_model(text, {"w1": (16, 8, 3, 3), "k": constant_shape, "w2": (8, 16, 3, 3)}, seed=1)
    pruned, report = _prune(model)
    # Two input gathers and the graph output's restore: nothing between c1 and the next gather.
    assert report["totals"]["gathers_added"] == 3
    restored = [n.output[0] for n in pruned.graph.node if n.name.endswith("gkp_restore")]
    assert restored == ["y"]


def test_unread_filters_are_not_computed() -> None:
    """G = 1 reader: its source Conv computes only the channels it keeps, and the gather goes."""
    from conftest import CHAIN, CHAIN_WEIGHTS

    model = make_model(CHAIN, CHAIN_WEIGHTS)
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=1, latency_runs=0)
    data = report.to_dict()
    first, second = data["layers"]
    assert first["dead_filters"] == sorted(set(range(32)) - set(second["kept_channels"][0]))
    assert len(first["dead_filters"]) == 16 and second["dead_filters"] == []
    assert first["macs_after"] == first["macs_before"] // 4  # half the inputs, half the filters
    assert data["totals"]["gathers_added"] == 1  # only the first Conv's own input gather is left
    conv1 = next(n for n in pruned.graph.node if n.op_type == "Conv")
    weight = next(t for t in pruned.graph.initializer if t.name == conv1.input[1])
    assert list(weight.dims) == [16, 4, 3, 3]
    feeds = feeds_for(model)
    assert_close(run(pruned, feeds), run(reference_from_report(model, data), feeds))
    assert data["totals"]["params_after"] < data["totals"]["params_before"] // 2


def test_trimming_a_whole_conv_keeps_its_folded_input_order() -> None:
    """c1 (G=2) permutes its output into c2's weight; c2, left whole, is then trimmed by c3 (G=1)."""
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.check.reference import masked_reference
    from onnx_gkp.layer.planner import PlanOptions, plan_layer
    from onnx_gkp.rewrite.conv import rewrite

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,6,6] x) => (float[1,8,6,6] y) {
      c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
      r1 = Relu (c1)
      c2 = Conv (r1, w2, b2)
      r2 = Relu (c2)
      y = Conv <pads=[1,1,1,1]> (r2, w3)
    }
    """
    model = make_model(text, {"w1": (16, 8, 3, 3), "b1": (16,), "w2": (16, 16, 1, 1), "b2": (16,), "w3": (8, 16, 3, 3)})
    for i, node in enumerate(model.graph.node):
        node.name = node.output[0]
    s1, s2, s3 = analyse(model).sites
    assert s3.source == (s2.node_index, (s2.node_index + 1,))
    p1 = plan_layer(s1.weight, PlanOptions(ratio=0.5, groups=2))
    p3 = plan_layer(s3.weight, PlanOptions(ratio=0.5, groups=1))
    rewritten = rewrite(model, [s1, s3], [p1, p3], whole=[s2])
    assert len(rewritten.dead_filters[s2.node_index]) == 8
    feeds = feeds_for(model)
    assert_close(run(rewritten.model, feeds), run(masked_reference(model, [s1, s3], [p1, p3]), feeds))


@pytest.mark.parametrize(
    "middle, shape, trimmed",
    [
        ("Conv", (32, 16, 1, 1), True),  # a dense Conv left out by --include: mixes its 16 inputs into 32
        ("Conv <group=16, pads=[1,1,1,1]>", (32, 1, 3, 3), False),  # depthwise with a channel multiplier: 16 -> 32
        ("Conv <group=2, pads=[1,1,1,1]>", (32, 8, 3, 3), False),  # grouped, not depthwise: mixes channels in a group
    ],
    ids=["dense-excluded", "depthwise-multiplier", "grouped"],
)
def test_a_channel_mixing_conv_ends_the_trimming_chain(middle: str, shape: tuple[int, ...], trimmed: bool) -> None:
    """y reads 32 channels made by a Conv that mixes c1's 16: c1 is not y's source, and its
    filters are not trimmed to y's kept channels (it once raised IndexError in ``conv._trim``).
    A dense Conv left out by --include is y's source itself: it stops computing the 8 filters
    y does not read; grouped Convs are not trimmed at all."""
    from onnx_gkp.analyse.sites import analyse

    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,6,6] x) => (float[1,8,6,6] y) {{
      c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
      n1 = BatchNormalization (c1, s1, o1, m1, v1)
      e = {middle} (n1, we)
      r = Relu (e)
      y = Conv (r, w2)
    }}
    """
    weights = {
        "w1": (16, 8, 3, 3),
        "b1": (16,),
        "s1": (16,),
        "o1": (16,),
        "m1": (16,),
        "v1": (16,),
        "we": shape,
        "w2": (8, 32, 1, 1),
    }
    model = make_model(text, weights)
    variance = next(t for t in model.graph.initializer if t.name == "v1")
    variance.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(variance)), "v1"))
    for node in model.graph.node:
        node.name = node.output[0]
    analysis = analyse(model, include="^(c1|y)$")
    y = analysis.sites[1]
    assert y.node == "y" and y.source == ((2, (3,)) if trimmed else None)
    assert [s.node for s in analysis.sources] == (["e"] if trimmed else [])
    pruned, report = onnx_gkp.prune(
        model, ratio=0.25, groups=1, include="^(c1|y)$", runtime_aware=False, latency_runs=0
    )
    data = report.to_dict()
    assert data["validation"]["passed"] and [layer["dead_filters"] for layer in data["layers"]] == [[], []]
    middle_skip = next(s for s in data["skipped"] if s["node"] == "e")
    assert len(middle_skip["dead_filters"]) == (8 if trimmed else 0)
    feeds = feeds_for(model)
    assert_close(run(pruned, feeds), run(reference_from_report(model, data), feeds))


def test_a_broadcast_that_widens_the_channels_ends_the_trimming_chain() -> None:
    """c1's one filter is scaled into 16 channels by a constant: y's 16 input channels are not
    c1's filters, so c1 is not its source."""
    from onnx_gkp.analyse.sites import analyse

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,6,6] x) => (float[1,8,6,6] y) {
      c1 = Conv <pads=[1,1,1,1]> (x, w1)
      m = Mul (c1, k)
      y = Conv (m, w2)
    }
    """
    model = make_model(text, {"w1": (1, 8, 3, 3), "k": (1, 16, 1, 1), "w2": (8, 16, 1, 1)})
    c1, y = analyse(model).sites
    assert c1.weight.shape[0] == 1 and y.source is None
    pruned, report = onnx_gkp.prune(model, ratio=0.25, groups=1, runtime_aware=False, latency_runs=0)
    assert report.to_dict()["validation"]["passed"]
