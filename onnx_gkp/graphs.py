"""The two questions every stage asks of an ONNX node: which graphs it holds, and its group count."""

from __future__ import annotations

import onnx


def attribute_graphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The graphs one attribute holds (an If branch, a Loop body, or a list of them)."""
    return ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """Every graph ``node`` holds, in attribute order (walk them to reach nested nodes)."""
    return [graph for attr in node.attribute for graph in attribute_graphs(attr)]


def group_of(node: onnx.NodeProto) -> int:
    """A Conv's ``group`` attribute (1 when absent)."""
    return next((a.i for a in node.attribute if a.name == "group"), 1)
