"""Whole small models through the public API, checked against a reference built from the report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, assert_close, feeds_for, make_model, reference_from_report, run
from onnx import numpy_helper

import onnx_gkp
from onnx_gkp import GkpError


def check_pruned(original: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, dict]:
    """Graph handling under test, so G is chosen for quality alone (no timing noise)."""
    options.setdefault("runtime_aware", False)
    options.setdefault("ratio", 0.25)  # the uniform mode: graph handling, not the default policy
    pruned, report = onnx_gkp.prune(original, latency_runs=2, **options)
    data = report.to_dict()
    assert data["validation"]["passed"]
    feeds = feeds_for(original)
    assert_close(run(pruned, feeds), run(reference_from_report(original, data), feeds))
    onnx.checker.check_model(pruned, full_check=True)
    return pruned, data


def test_chain(chain_model: onnx.ModelProto) -> None:
    before = chain_model.SerializeToString()
    pruned, report = check_pruned(chain_model, ratio=0.5, groups=4)
    assert chain_model.SerializeToString() == before, "the caller's model must not change"
    assert [l["groups"] for l in report["layers"]] == [4, 4]
    assert report["totals"]["conv_macs_after"] == report["totals"]["conv_macs_before"] // 2
    assert {n.op_type for n in pruned.graph.node} == {"Gather", "Conv", "Relu"}


RESIDUAL_CONCAT = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[1,16,8,8] x) => (float[1,48,8,8] y) {
  a = Conv <pads=[1,1,1,1]> (x, w1)
  b = BatchNormalization (a, s1, o1, m1, v1)
  r = Relu(b)
  c = Conv <pads=[1,1,1,1]> (r, w2, b2)
  s = Add(c, x)
  t = Relu(s)
  p = Conv (t, w3)
  y = Concat <axis=1> (t, p)
}
"""
RESIDUAL_WEIGHTS = {
    "w1": (16, 16, 3, 3),
    "s1": (16,),
    "o1": (16,),
    "m1": (16,),
    "w2": (16, 16, 3, 3),
    "b2": (16,),
    "w3": (32, 16, 1, 1),
}


def _positive_variance(model: onnx.ModelProto) -> onnx.ModelProto:
    for tensor in model.graph.initializer:
        if tensor.name == "v1":
            return model
    model.graph.initializer.append(numpy_helper.from_array(np.full(16, 0.5, np.float32), "v1"))
    return model


@pytest.mark.parametrize("groups", ["auto", 1, 2, 8, 16])
def test_residual_and_concat(groups) -> None:
    model = _positive_variance(onnx.parser.parse_model(RESIDUAL_CONCAT))
    rng = np.random.default_rng(0)
    for name, shape in RESIDUAL_WEIGHTS.items():
        model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    _, report = check_pruned(model, ratio=0.375, groups=groups)
    assert len(report["layers"]) == 3
    assert all(l["kept_per_group"] == 10 for l in report["layers"])


DEPTHWISE = """
<ir_version: 8, opset_import: ["" : 17]>
dw (float[1,8,8,8] x) => (float[1,16,8,8] y) {
  a = Conv <group=8, pads=[1,1,1,1]> (x, wd)
  y = Conv (a, wp)
}
"""


def test_depthwise_left_alone_pointwise_pruned() -> None:
    model = make_model(DEPTHWISE, {"wd": (8, 1, 3, 3), "wp": (16, 8, 1, 1)})
    _, report = check_pruned(model, ratio=0.5)
    assert [l["node_index"] for l in report["layers"]] == [1]
    assert report["skipped"][0]["reason"] == "depthwise Conv (group=8)"


CONSTANT_WEIGHTS = """
<ir_version: 8, opset_import: ["" : 17]>
paddle (float[1,8,6,6] x) => (float[1,8,6,6] y) {
  w = Constant <value = float[8,8,1,1] {%s}> ()
  y = Conv (x, w)
}
"""


def test_constant_node_weights() -> None:
    values = ",".join(f"{v:.4f}" for v in np.random.default_rng(0).standard_normal(64))
    model = onnx.parser.parse_model(CONSTANT_WEIGHTS % values)
    pruned, report = check_pruned(model, ratio=0.5, groups=2)
    assert report["layers"][0]["groups"] == 2
    assert not any(n.op_type == "Constant" for n in pruned.graph.node)


REFUSED = """
<ir_version: 8, opset_import: ["" : 17]>
refused (float[1,8,6,6] x, float[8,8,1,1] wr) => (float[1,8,6,6] y, float[1,8,6,6] z, float[1,8,6,6] t, float[1,8,6,6] u) {
  y = Conv (x, ws)
  z = Conv (x, ws)
  t = Conv (x, wr)
  u = ConvTranspose (x, wt)
}
"""  # noqa: E501


def test_shared_runtime_and_transposed_weights_are_skipped_with_reasons() -> None:
    model = make_model(REFUSED, {"ws": (8, 8, 1, 1), "wt": (8, 8, 1, 1)})
    pruned, report = onnx_gkp.prune(model, latency_runs=0, test_shapes={"wr": (8, 8, 1, 1)})
    reasons = [s["reason"] for s in report.to_dict()["skipped"]]
    assert report.layers == []
    assert "shared" in reasons[0] and "shared" in reasons[1]
    assert "not a constant" in reasons[2]
    assert reasons[3] == "ConvTranspose is not pruned"


def test_a_forced_count_that_divides_no_layer_is_an_error(chain_model: onnx.ModelProto) -> None:
    with pytest.raises(GkpError, match="divides the output channels of no prunable Conv"):
        onnx_gkp.prune(chain_model, groups=3)


def test_include_exclude_and_stem() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.node[0].name, model.graph.node[2].name = "stage1.conv", "stage2.conv"
    _, only = check_pruned(model, include=r"^stage2")
    assert [l["node"] for l in only["layers"]] == ["stage2.conv"]
    _, without = check_pruned(model, exclude=r"stage2")
    assert [l["node"] for l in without["layers"]] == ["stage1.conv"]
    _, stem = check_pruned(model, min_in_channels=16)
    assert [s["reason"] for s in stem["skipped"]] == ["too few input channels to prune (8 < 16)"]


@pytest.mark.parametrize("rank", [1, 3])
def test_conv1d_and_conv3d_models(rank: int) -> None:
    dims = ",".join(["6"] * rank)
    text = f"""
<ir_version: 8, opset_import: ["" : 17]>
net (float[1,8,{dims}] x) => (float[1,8,{dims}] y) {{
  a = Conv (x, w1)
  y = Conv (a, w2)
}}
"""
    model = make_model(text, {"w1": (16, 8, *[1] * rank), "w2": (8, 16, *[1] * rank)})
    _, report = check_pruned(model, ratio=0.5, groups="auto")
    assert len(report["layers"]) == 2


def test_same_seed_same_bytes(chain_model: onnx.ModelProto) -> None:
    a, _ = onnx_gkp.prune(chain_model, ratio=0.25, seed=3, check=False)
    b, _ = onnx_gkp.prune(chain_model, ratio=0.25, seed=3, check=False)
    assert a.SerializeToString() == b.SerializeToString()


def test_validate_catches_a_wrong_model(chain_model: onnx.ModelProto) -> None:
    pruned, report = onnx_gkp.prune(chain_model, ratio=0.25, groups=2, check=False)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(pruned)
    conv = next(t for t in wrong.graph.initializer if t.name.endswith("gkp_weight"))
    array = numpy_helper.to_array(conv).copy()
    array[0, 0] += 1.0
    conv.CopyFrom(numpy_helper.from_array(array, conv.name))
    masked = reference_from_report(chain_model, report.to_dict())
    assert onnx_gkp.validate(pruned, masked, latency_runs=0).passed
    assert not onnx_gkp.validate(wrong, masked, latency_runs=0).passed


RUNTIME_SHAPED = """
<ir_version: 8, opset_import: ["" : 17]>
shaped (float[1,8,10,10] x) => (float[1,16,10,10] y) {
  f = Constant <value = float[4] {1.0, 8.0, 10.0, 10.0}> ()
  g = Floor (f)
  s = Cast <to = 7> (g)
  r = Reshape (x, s)
  y = Conv <pads=[1,1,1,1]> (r, w)
}
"""


def test_macs_of_convs_static_inference_cannot_shape() -> None:
    model = make_model(RUNTIME_SHAPED, {"w": (16, 8, 3, 3)})
    _, report = check_pruned(model, ratio=0.5, groups=2)
    assert report["layers"][0]["macs_before"] == 16 * 8 * 9 * 100


SATURATING = """
<ir_version: 8, opset_import: ["" : 17]>
saturating (float[1,8,6,6] x) => (float[1,8,6,6] y) {
  a = Conv (x, w1)
  big = Constant <value = float[1] {-1000.0}> ()
  b = Add (a, big)
  y = Sigmoid (b)
}
"""


def test_inner_probes_catch_what_a_saturated_output_hides() -> None:
    model = make_model(SATURATING, {"w1": (8, 8, 1, 1)})
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=2, check=False)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(pruned)
    conv = next(t for t in wrong.graph.initializer if t.name.endswith("gkp_weight"))
    conv.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(conv) * 2, conv.name))
    masked = reference_from_report(model, report.to_dict())
    assert onnx_gkp.validate(wrong, masked, latency_runs=0).passed, "the output alone is blind here"
    assert not onnx_gkp.validate(wrong, masked, latency_runs=0, probes=["a"]).passed
    assert onnx_gkp.validate(pruned, masked, latency_runs=0, probes=["a"]).passed
