"""The dense rewrite equals the masked reference, whatever the Conv and the plan."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from conftest import assert_close, feeds_for, run
from onnx import helper, numpy_helper

from onnx_gkp.analyse.sites import analyse
from onnx_gkp.check.reference import masked_reference
from onnx_gkp.layer.planner import LayerPlan
from onnx_gkp.rewrite.conv import rewrite


def single_conv(rank: int, c_in: int, c_out: int, bias: bool, attrs: dict, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    kernel = [3, 2, 3][:rank]
    spatial = [9, 8, 7][:rank]
    weight = rng.standard_normal([c_out, c_in, *kernel]).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", **attrs)
    graph = helper.make_graph(
        [node],
        "one_conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, c_in, *spatial])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [f"d{i}" for i in range(rank + 2)])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def random_plan(c_out: int, c_in: int, groups: int, keep: int, rng: np.random.Generator) -> LayerPlan:
    filters = rng.permutation(c_out).reshape(groups, -1)
    kept = [np.sort(rng.choice(c_in, keep, replace=False)) for _ in range(groups)]
    return LayerPlan(tuple(tuple(map(int, f)) for f in filters), tuple(tuple(map(int, k)) for k in kept))


ATTRS = [
    {},
    {"strides": "2", "pads": "1"},
    {"dilations": "2"},
    {"auto_pad": "SAME_UPPER", "strides": "2"},
    {"auto_pad": "SAME_LOWER"},
    {"auto_pad": "VALID", "strides": "2"},
]


def _expand(attrs: dict, rank: int) -> dict:
    out = {}
    for key, value in attrs.items():
        if key == "auto_pad":
            out[key] = value
        elif key == "pads":
            out[key] = [int(value)] * (2 * rank)
        else:
            out[key] = [int(value)] * rank
    return out


CASES = list(itertools.product([1, 2, 3], range(len(ATTRS)), [False, True]))


@pytest.mark.parametrize("rank,attr_index,bias", CASES)
def test_rewrite_equals_masked_reference(rank: int, attr_index: int, bias: bool) -> None:
    c_in, c_out = 6, 12
    model = single_conv(rank, c_in, c_out, bias, _expand(ATTRS[attr_index], rank), seed=rank * 10 + attr_index)
    site = analyse(model).sites[0]
    rng = np.random.default_rng(attr_index)
    feeds = feeds_for(model)
    for groups in [1, 2, 3, 4, 6, 12]:
        keep = int(rng.integers(1, c_in))
        plan = random_plan(c_out, c_in, groups, keep, rng)
        pruned = rewrite(model, [site], [plan]).model
        onnx.checker.check_model(pruned, full_check=True)
        conv = next(n for n in pruned.graph.node if n.op_type == "Conv")
        assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "group")) == groups
        assert_close(run(pruned, feeds), run(masked_reference(model, [site], [plan]), feeds))


def test_rewrite_keeps_names_versions_and_metadata() -> None:
    model = single_conv(2, 8, 8, True, {}, seed=0)
    model.producer_name = "someone"
    helper.set_model_props(model, {"licence": "MIT"})
    site = analyse(model).sites[0]
    plan = random_plan(8, 8, 4, 3, np.random.default_rng(0))
    rewritten = rewrite(model, [site], [plan])
    pruned, gathers = rewritten.model, rewritten.gathers
    assert gathers == 2
    assert pruned.ir_version == 8
    assert [(o.domain, o.version) for o in pruned.opset_import] == [("", 17)]
    assert [i.name for i in pruned.graph.input] == ["x"]
    assert [o.name for o in pruned.graph.output] == ["y"]
    assert pruned.producer_name == "someone"
    assert {p.key: p.value for p in pruned.metadata_props} == {"licence": "MIT"}
    assert not any(t.name in ("w", "b") for t in pruned.graph.initializer)


def test_identity_filter_order_needs_no_output_gather() -> None:
    model = single_conv(2, 8, 8, False, {}, seed=1)
    site = analyse(model).sites[0]
    plan = LayerPlan(((0, 1, 2, 3), (4, 5, 6, 7)), ((0, 1), (2, 3)))
    rewritten = rewrite(model, [site], [plan])
    pruned, gathers = rewritten.model, rewritten.gathers
    assert gathers == 1
    assert [n.op_type for n in pruned.graph.node] == ["Gather", "Conv"]
