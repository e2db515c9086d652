"""Property-based: random Convs and random small graphs always equal their masked reference in
onnxruntime, and the same seed gives the same bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from conftest import reference_from_report, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnx_gkp
from onnx_gkp.analyse.shapes import resolve_input_shapes
from onnx_gkp.layer.planner import kept_count
from onnx_gkp.runtime.sessions import random_inputs

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Builder:
    """A graph grown node by node, with seeded weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def tensor(self, shape: tuple[int, ...], positive: bool = False) -> str:
        name = f"p{len(self.inits)}"
        values = self.rng.standard_normal(shape).astype(np.float32)
        self.inits.append(numpy_helper.from_array(np.abs(values) + 0.1 if positive else values, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, kernel: int = 3, bias: bool = False, **attrs: object) -> str:
        inputs = [x, self.tensor((c_out, c_in, kernel, kernel))] + ([self.tensor((c_out,))] if bias else [])
        return self.node("Conv", inputs, pads=[kernel // 2] * 4, **attrs)

    def model(self, c_in: int, outputs: list[str], opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "random",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 8, 8])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["?"] * 4) for o in outputs],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def assert_equals_reference(model: onnx.ModelProto, **options: object) -> None:
    pruned, report = onnx_gkp.prune(model, runtime_aware=False, latency_runs=0, **{"ratio": 0.25, **options})
    data = report.to_dict()
    assert data["validation"]["passed"]
    feeds = random_inputs(model, resolve_input_shapes(model), seed=11)
    for a, b in zip(run(pruned, feeds), run(reference_from_report(model, data), feeds)):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max() + 1e-5


@dataclass(frozen=True)
class ConvCase:
    """One Conv's geometry, drawn by hypothesis; its spatial size and pads come from the seed."""

    rank: int
    c_in: int
    filters: int
    kernel: int
    stride: int
    dilation: int
    padding: str
    bias: bool


CONV_CASES = st.builds(
    ConvCase,
    rank=st.integers(1, 3),
    c_in=st.integers(4, 12),
    filters=st.sampled_from([4, 6, 8, 12, 16]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["none", "pads", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    bias=st.booleans(),
)


def conv_model(case: ConvCase, rng: np.random.Generator) -> onnx.ModelProto:
    """The drawn Conv, then Relu and a 1x1 Conv reading it, so the rewrite folds or restores."""
    rank, kernel, filters = case.rank, case.kernel, case.filters
    dilation = 1 if case.padding.startswith("SAME") else case.dilation  # onnxruntime has no dilated SAME padding
    spatial = [int(s) for s in rng.integers((kernel - 1) * dilation + 1, 10, size=rank)]
    attrs: dict = {"strides": [case.stride] * rank, "dilations": [dilation] * rank}
    if case.padding == "pads":
        attrs["pads"] = [int(p) for p in rng.integers(0, kernel, size=2 * rank)]
    elif case.padding != "none":
        attrs["auto_pad"] = case.padding
    weight = rng.standard_normal((filters, case.c_in, *[kernel] * rank)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    if case.bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(filters).astype(np.float32), "b"))
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if case.bias else []), ["c"], **attrs)
    tail = helper.make_node("Conv", ["r", "w2"], ["y"])
    inits.append(numpy_helper.from_array(rng.standard_normal((4, filters, *[1] * rank)).astype(np.float32), "w2"))
    graph = helper.make_graph(
        [conv, helper.make_node("Relu", ["c"], ["r"]), tail],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, case.c_in, *spatial])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["?"] * (rank + 2)) for o in ("y", "c")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@SETTINGS
@given(
    case=CONV_CASES,
    ratio=st.sampled_from([0.25, 0.5, 0.75]),
    groups=st.sampled_from(["auto", 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_random_conv_equals_its_masked_reference(case: ConvCase, ratio: float, groups: object, seed: int) -> None:
    model = conv_model(case, np.random.default_rng(seed))
    assert_equals_reference(model, ratio=ratio, groups=groups, max_groups=4, seed=seed)


BLOCKS = st.lists(
    st.tuples(st.sampled_from(["conv", "conv_bn", "residual", "concat", "branch"]), st.sampled_from([4, 8, 12, 16])),
    min_size=1,
    max_size=5,
)


def random_graph(blocks: list[tuple[str, int]], c0: int, seed: int, side_output: bool) -> onnx.ModelProto:
    """Chains, residual Adds, Concats, two-way branches and Conv-BN pairs, in the drawn order."""
    b, t, c = Builder(seed), "x", c0
    outputs = []
    for kind, width in blocks:
        if kind == "conv":
            t, c = b.node("Relu", [b.conv(t, c, width, bias=True)]), width
        elif kind == "conv_bn":
            conv = b.conv(t, c, width)
            bn = b.node(
                "BatchNormalization",
                [conv, b.tensor((width,)), b.tensor((width,)), b.tensor((width,)), b.tensor((width,), positive=True)],
            )
            t, c = b.node("Relu", [bn]), width
        elif kind == "residual":
            t = b.node("Relu", [b.node("Add", [b.conv(t, c, c), t])])
        elif kind == "concat":
            t, c = b.node("Concat", [t, b.conv(t, c, width, kernel=1)], axis=1), c + width
        else:
            t, c = b.node("Add", [b.conv(t, c, width, kernel=1), b.conv(t, c, width)]), width
        if side_output and not outputs:
            outputs.append(t)
    return b.model(c0, outputs + [b.conv(t, c, 4, kernel=1)])


@SETTINGS
@given(
    blocks=BLOCKS,
    c0=st.sampled_from([4, 8]),
    seed=st.integers(0, 2**16),
    side_output=st.booleans(),
    ratio=st.sampled_from([0.25, 0.5]),
    groups=st.sampled_from(["auto", 1]),
)
def test_random_graph_equals_its_masked_reference(blocks, c0, seed, side_output, ratio, groups) -> None:
    model = random_graph(blocks, c0, seed, side_output)
    onnx.checker.check_model(model, full_check=True)
    assert_equals_reference(model, ratio=ratio, groups=groups, max_groups=4, seed=seed)


@settings(max_examples=10, deadline=None)
@given(blocks=BLOCKS, seed=st.integers(0, 2**16))
def test_same_seed_same_bytes(blocks, seed) -> None:
    model = random_graph(blocks, 8, seed, side_output=False)
    first, _ = onnx_gkp.prune(model, ratio=0.25, seed=seed, runtime_aware=False, check=False)
    again, _ = onnx_gkp.prune(model, ratio=0.25, seed=seed, runtime_aware=False, check=False)
    assert first.SerializeToString() == again.SerializeToString()


@given(st.integers(1, 4096), st.floats(0.0, 0.999), st.sampled_from([1, 8, 16, 32]))
def test_a_kept_count_is_a_real_channel_count(c_in: int, ratio: float, align: int) -> None:
    """At least one channel and never more than the layer has (an aligned 360 once became 368)."""
    kept = kept_count(c_in, ratio, align)
    assert 1 <= kept <= c_in
    assert kept == c_in or kept == kept_count(c_in, ratio) or kept % align == 0
