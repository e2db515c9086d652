"""``trims.decide_trims``: the filters a source stops computing, known before the rewrite, are
those the rewritten graph stops computing, on the bundled model and the zoo's real graphs
(SiLU gates in YOLOv8n, Relu6 and depthwise chains in MobileNetV2, BN kept and folded)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_gkp.analyse.graph import constant_lookup
from onnx_gkp.analyse.sites import Analysis, ConvSite, analyse
from onnx_gkp.layer.planner import LayerPlan, PlanOptions, plan_layer
from onnx_gkp.plan.trims import Trim, decide_trims
from onnx_gkp.rewrite.conv import IN_GATHER, rewrite

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from zoo import MODELS, fetch  # noqa: E402

# (model, --include): which sites there are, hence which Convs are sources outside them
CASES = [
    ("bundled", None),
    ("bundled", r"conv2"),
    ("yolov8n", None),
    ("mobilenet_v2_imagenet", r"conv\.2/Conv$"),
    ("mobilenet_v2_imagenet_folded", None),
    ("orientation", None),
    ("ppocr_det", None),
    ("mnist", None),
]


def _model(name: str) -> tuple[onnx.ModelProto, Optional[dict]]:
    if name == "bundled":
        return onnx.load(ROOT / "models/resnet20_fashion_mnist.onnx"), None
    try:
        return onnx.load(fetch(name)), MODELS[name].test_shapes or None
    except Exception as error:  # no registry, or no zoo extra: nothing to test against
        pytest.skip(f"{name} could not be fetched: {error}")


def _planned(analysis: Analysis) -> tuple[list[ConvSite], list[LayerPlan], list[ConvSite]]:
    """Every site pruned by half, a third of them with G = 2, a fifth left whole."""
    sites, plans, whole = [], [], list(analysis.sources)
    for k, site in enumerate(analysis.sites):
        options = PlanOptions(ratio=0.5, groups=2 if k % 3 == 2 and site.weight.shape[0] % 2 == 0 else 1)
        if k % 5 == 4 or options.refusal(*site.weight.shape[:2]):
            whole.append(site)
        else:
            sites.append(site)
            plans.append(plan_layer(site.weight, options))
    return sites, plans, whole


@pytest.mark.parametrize("name,include", CASES)
def test_trims_decided_before_are_those_the_rewrite_makes(name: str, include: Optional[str]) -> None:
    model, shapes = _model(name)
    analysis = analyse(model, include=include, test_shapes=shapes)
    sites, plans, whole = _planned(analysis)
    trims = decide_trims(model, sites, plans, whole)
    rewritten = rewrite(model, sites, plans, whole=whole, trims=trims)
    assert rewritten.model.SerializeToString() == rewrite(model, sites, plans, whole=whole).model.SerializeToString()
    assert rewritten.dead_filters == {i: t.dead for i, t in trims.items()}
    assert rewritten.filters == {i: t.filters for i, t in trims.items()}
    # What the graph computes: each trimmed Conv its kept filters, every other Conv all of them.
    before, after = constant_lookup(model), constant_lookup(rewritten.model)
    producers = {out: n for n in rewritten.model.graph.node for out in n.output}
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Conv" and node.output[0] in producers and before(node.input[1]) is not None:
            filters = after(producers[node.output[0]].input[1]).shape[0]
            assert filters == (len(trims[index].kept) if index in trims else before(node.input[1]).shape[0]), node.name
    gathers = {n.name for n in rewritten.model.graph.node if n.name.endswith(IN_GATHER)}
    for site in sites:
        base = model.graph.node[site.node_index].name or f"{model.graph.node[site.node_index].output[0]}_conv"
        trimmed = site.source is not None and site.source[0] in trims
        assert (f"{base}/{IN_GATHER}" in gathers) != trimmed, site.node


def test_the_bundled_model_and_mobilenet_trim_something() -> None:
    """Not vacuous: sources are trimmed, chains of depthwise Convs along with them."""
    model, _ = _model("bundled")
    sites, plans, whole = _planned(analyse(model))
    assert decide_trims(model, sites, plans, whole)
    model, shapes = _model("mobilenet_v2_imagenet")
    sites, plans, whole = _planned(analyse(model, include=r"conv\.2/Conv$", test_shapes=shapes))
    trims = decide_trims(model, sites, plans, whole)
    depthwise = [i for i in trims if any(a.name == "group" and a.i > 1 for a in model.graph.node[i].attribute)]
    assert depthwise and all(isinstance(trims[i], Trim) and len(trims[i].kept) < trims[i].filters for i in depthwise)


def test_a_source_pruned_with_two_groups_is_not_trimmed() -> None:
    """A source regrouped with ``G = 2`` is no dense Conv: it computes every filter."""
    model, _ = _model("bundled")
    analysis = analyse(model)
    sites = [s for s in analysis.sites if s.weight.shape[0] % 2 == 0]
    plans = [plan_layer(s.weight, PlanOptions(ratio=0.5, groups=2)) for s in sites]
    assert any(s.source is not None for s in sites)
    assert decide_trims(model, sites, plans) == {} == rewrite(model, sites, plans).dead_filters


def test_a_chain_the_trim_cannot_cross_gives_no_source() -> None:
    """Analysis and rewrite read one crossing rule: a MaxPool that declares its (empty) Indices
    output is not crossed by the rewrite, so the Conv before it is no source (it used to be one,
    credited with a trim that never happened)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), n) for n in ("wa", "wb")]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="first", pads=[1] * 4),
        helper.make_node("MaxPool", ["a"], ["p", ""], name="pool", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["p", "wb"], ["y"], name="second", pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    analysis = analyse(model, include="second")
    assert [s.source for s in analysis.sites] == [None] and analysis.sources == []
    without_pool_output = onnx.ModelProto()
    without_pool_output.CopyFrom(model)
    del without_pool_output.graph.node[1].output[1:]
    assert analyse(without_pool_output, include="second").sites[0].source == (0, (1,))
