"""The inverted residual block of the depthwise-trim tests (test_depthwise_trim.py), built with
onnx.helper part by part: expand 1x1 -> BN -> Clip (Relu6) -> depthwise 3x3 -> BN -> Clip ->
project 1x1, its parameters drawn from one seeded generator in the order the nodes are built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

C_IN, HIDDEN, C_OUT, SIDE = 8, 32, 8, 10


@dataclass
class _Parts:
    """The nodes and initializers built so far; ``constant_nodes``: the depthwise weight and the
    per-channel scale come from Constant nodes, not initializers."""

    rng: np.random.Generator
    constant_nodes: bool
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)

    def const(self, name: str, array: np.ndarray) -> str:
        array = array.astype(np.float32)
        if self.constant_nodes and name in ("dw_w", "scale"):
            self.nodes.append(
                helper.make_node(
                    "Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(array, name)
                )
            )
        else:
            self.inits.append(numpy_helper.from_array(array, name))
        return name

    def bn(self, x: str, out: str, channels: int) -> None:
        rng = self.rng
        self.nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    x,
                    self.const(f"{out}_s", rng.uniform(0.5, 1.5, channels)),
                    self.const(f"{out}_o", rng.standard_normal(channels)),
                    self.const(f"{out}_m", rng.standard_normal(channels) * 0.1),
                    self.const(f"{out}_v", rng.uniform(0.5, 1.5, channels)),
                ],
                [out],
                name=out,
            )
        )

    def act(self, x: str, out: str, kind: str) -> None:
        if kind == "clip":
            self.nodes.append(
                helper.make_node(
                    "Clip",
                    [x, self.const(f"{out}_lo", np.array(0.0)), self.const(f"{out}_hi", np.array(6.0))],
                    [out],
                    name=out,
                )
            )
        elif kind == "swish":
            self.nodes.append(helper.make_node("Sigmoid", [x], [f"{out}_gate"], name=f"{out}_gate"))
            self.nodes.append(helper.make_node("Mul", [x, f"{out}_gate"], [out], name=out))
        else:
            self.nodes.append(helper.make_node("HardSwish", [x], [out], name=out))


def _expand(parts: _Parts, activation: str, stem_channels: int) -> None:
    """The expand 1x1 Conv from ``x``, its BN and activation (Sigmoid-Mul for ``swish``): ``e_act``."""
    parts.nodes.append(
        helper.make_node(
            "Conv",
            [
                "x",
                parts.const("expand_w", parts.rng.standard_normal((HIDDEN, stem_channels, 1, 1))),
                parts.const("expand_b", parts.rng.standard_normal(HIDDEN)),
            ],
            ["e"],
            name="expand",
        )
    )
    parts.bn("e", "e_bn", HIDDEN)
    parts.act("e_bn", "e_act", "swish" if activation == "swish" else "clip")


def _depthwise(parts: _Parts, activation: str) -> str:
    """The depthwise 3x3 Conv, its BN and activation (HardSwish for ``swish``), then with Constant
    nodes a per-channel scale: the name of the last output."""
    parts.nodes.append(
        helper.make_node(
            "Conv",
            [
                "e_act",
                parts.const("dw_w", parts.rng.standard_normal((HIDDEN, 1, 3, 3))),
                parts.const("dw_b", parts.rng.standard_normal(HIDDEN)),
            ],
            ["d"],
            name="depthwise",
            group=HIDDEN,
            pads=[1, 1, 1, 1],
        )
    )
    parts.bn("d", "d_bn", HIDDEN)
    parts.act("d_bn", "d_act", "hardswish" if activation == "swish" else "clip")
    if not parts.constant_nodes:
        return "d_act"
    parts.nodes.append(
        helper.make_node(
            "Mul",
            ["d_act", parts.const("scale", parts.rng.uniform(0.5, 1.5, (HIDDEN, 1, 1)))],
            ["d_scaled"],
            name="d_scaled",
        )
    )
    return "d_scaled"


def _project(parts: _Parts, last: str, extra_reader: Optional[str]) -> list:
    """The projection 1x1 Conv from ``last`` to ``y`` and, for ``extra_reader``, a GlobalAveragePool
    of that tensor to ``pooled``: the graph's outputs."""
    parts.nodes.append(
        helper.make_node(
            "Conv",
            [last, parts.const("project_w", parts.rng.standard_normal((C_OUT, HIDDEN, 1, 1)))],
            ["y"],
            name="project",
        )
    )
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C_OUT, SIDE, SIDE])]
    if extra_reader is not None:
        parts.nodes.append(helper.make_node("GlobalAveragePool", [extra_reader], ["pooled"], name="pooled"))
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, HIDDEN, 1, 1]))
    return outputs


def _block(
    activation: str = "clip",
    extra_reader: Optional[str] = None,
    stem_channels: int = C_IN,
    constant_nodes: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """The inverted residual block. ``activation``: ``clip`` (Relu6), ``swish`` (Sigmoid-Mul
    after the expand BN, HardSwish after the depthwise BN); ``extra_reader``: a tensor also
    read by a GlobalAveragePool whose result is a second graph output; ``constant_nodes``: the
    depthwise weight and a per-channel scale after it come from Constant nodes, not initializers."""
    parts = _Parts(np.random.default_rng(seed), constant_nodes)
    _expand(parts, activation, stem_channels)
    outputs = _project(parts, _depthwise(parts, activation), extra_reader)
    graph = helper.make_graph(
        parts.nodes,
        "inverted_residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, stem_channels, SIDE, SIDE])],
        outputs,
        parts.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model
