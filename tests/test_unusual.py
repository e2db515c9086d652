"""Large-ish and unusual but valid models: each prunes, validates, and equals the reference
rebuilt from its JSON report in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import NEW_OPSET, cli, reference_from_report, run
from onnx import helper, numpy_helper

import onnx_gkp
from onnx_gkp.analyse.shapes import resolve_input_shapes
from onnx_gkp.runtime.sessions import random_inputs

ORT_OPSET = (NEW_OPSET or onnx.defs.onnx_opset_version() + 1) - 1  # the newest this onnxruntime loads


def build(text: str, weights: dict[str, tuple[int, ...]], dtype: type = np.float32, seed: int = 0) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for name, shape in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_prunes(model: onnx.ModelProto, test_shapes: dict | None = None, rtol: float = 1e-4, **options) -> dict:
    """Pruned, validated, and equal to the report's masked reference on fresh inputs."""
    pruned, report = onnx_gkp.prune(
        model, runtime_aware=False, latency_runs=0, test_shapes=test_shapes, **{"ratio": 0.25, **options}
    )
    data = report.to_dict()
    assert data["validation"]["passed"] and data["layers"]
    feeds = random_inputs(model, resolve_input_shapes(model, test_shapes), seed=7)
    got, want = run(pruned, feeds), run(reference_from_report(model, data), feeds)
    assert len(got) == len(want) == len(model.graph.output)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert np.abs(a64 - b64).max() <= rtol * np.abs(b64).max() + 1e-5
    return data


def chain_text(dtype: str = "float", opset: int = 17, ir: int = 8, batch: str = "1", spatial: str = "10,10") -> str:
    return f"""
<ir_version: {ir}, opset_import: ["" : {opset}]>
chain ({dtype}[{batch},8,{spatial}] x) => ({dtype}[{batch},16,{spatial}] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu(a)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}}
"""


WEIGHTS = {"w1": (32, 8, 3, 3), "b1": (32,), "w2": (16, 32, 3, 3)}


def test_fp16_weights_and_activations() -> None:
    model = build(chain_text("float16"), WEIGHTS, np.float16)
    data = assert_prunes(model, rtol=2e-3, ratio=0.5, groups=2)
    assert data["validation"]["rtol"] >= 1e-3, "half precision needs a half-precision tolerance"


@pytest.mark.parametrize("opset", sorted({11, 13, 15, 17, 19, 21, ORT_OPSET}))
def test_opsets_from_11_to_the_newest_onnxruntime_loads(opset: int) -> None:
    ir = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    text = f"""
<ir_version: {ir}, opset_import: ["" : {opset}]>
block (float[1,8,8,8] x) => (float[1,48,8,8] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1)
  b = BatchNormalization (a, s, o, m, v)
  r = Relu (b)
  c = Conv <pads=[1,1,1,1]> (r, w2, b2)
  s2 = Add (c, r)
  p = Conv (s2, w3)
  y = Concat <axis=1> (s2, p)
}}
"""
    weights = {
        "w1": (16, 8, 3, 3),
        "s": (16,),
        "o": (16,),
        "m": (16,),
        "w2": (16, 16, 3, 3),
        "b2": (16,),
        "w3": (32, 16, 1, 1),
    }
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, shape in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    model.graph.initializer.append(numpy_helper.from_array(np.full(16, 0.5, np.float32), "v"))
    pruned, _ = onnx_gkp.prune(model, runtime_aware=False, latency_runs=0, ratio=0.5, groups=2)
    assert pruned.opset_import[0].version == opset and pruned.ir_version == ir
    assert_prunes(model, ratio=0.5, groups=2)


@pytest.mark.parametrize(
    "batch,spatial,shapes",
    [
        ("N", "10,10", None),  # dynamic batch: 1 unless told
        ("N", "10,10", {"x": (3, 8, 10, 10)}),
        ("N", "H,W", {"x": (2, 8, 12, 9)}),  # dynamic spatial dims need a test shape
    ],
)
def test_dynamic_batch_and_spatial_dims(batch: str, spatial: str, shapes: dict | None) -> None:
    model = build(chain_text(batch=batch, spatial=spatial), WEIGHTS)
    data = assert_prunes(model, test_shapes=shapes, ratio=0.5, groups=2)
    assert data["input_shapes"]["x"] == list((shapes or {"x": (1, 8, 10, 10)})["x"])


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_auto_pad_in_conv1d_2d_3d(auto_pad: str, rank: int) -> None:
    spatial = ",".join(["9", "8", "7"][:rank])
    strides = ",".join(["2"] * rank)
    text = f"""
<ir_version: 8, opset_import: ["" : 17]>
padded (float[1,8,{spatial}] x) => (float[1,8,?,?,?] y) {{
  a = Conv <auto_pad="{auto_pad}", strides=[{strides}]> (x, w1)
  r = Relu (a)
  y = Conv <auto_pad="{auto_pad}"> (r, w2)
}}
""".replace(",?,?,?", ",?" * rank)
    model = build(text, {"w1": (16, 8, *[3] * rank), "w2": (8, 16, *[3] * rank)})
    assert len(assert_prunes(model, ratio=0.5, groups="auto", max_groups=4)["layers"]) == 2


SEVERAL = """
<ir_version: 8, opset_import: ["" : 17]>
several (float[1,8,6,6] x1, float[1,8,6,6] x2) => (float[1,16,6,6] a1, float[1,16,6,6] y, float[1,8,6,6] z) {
  a1 = Conv <pads=[1,1,1,1]> (x1, w1)
  a2 = Conv <pads=[1,1,1,1]> (x2, w2, b2)
  s = Add (a1, a2)
  r = Relu (s)
  y = Conv (r, w3)
  z = Conv (r, w4)
}
"""


@pytest.mark.parametrize("named", [True, False])
def test_several_inputs_and_outputs_convs_feeding_outputs_unnamed_nodes(named: bool) -> None:
    model = build(
        SEVERAL, {"w1": (16, 8, 3, 3), "w2": (16, 8, 3, 3), "b2": (16,), "w3": (16, 16, 1, 1), "w4": (8, 16, 1, 1)}
    )
    if not named:
        for node in model.graph.node:
            node.name = ""
    data = assert_prunes(model, ratio=0.5, groups=4)
    assert len(data["layers"]) == 4
    assert {o.name for o in model.graph.output} == {"a1", "y", "z"}


def test_unusual_model_through_the_cli(tmp_path: Path) -> None:
    model = build(
        SEVERAL, {"w1": (16, 8, 3, 3), "w2": (16, 8, 3, 3), "b2": (16,), "w3": (16, 16, 1, 1), "w4": (8, 16, 1, 1)}
    )
    for node in model.graph.node:
        node.name = ""
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    result = cli(source, out, "--ratio", "0.5", "--quality-only")
    assert result.returncode == 0, result.stderr
    assert "exactness passed" in result.stdout
    assert [o.name for o in onnx.load(out).graph.output] == ["a1", "y", "z"]
