"""Reading an ONNX graph as it is stored: fixed tensors, their Identity copies, who reads what
(subgraphs included), and the parameter count.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Callable, Iterator, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import GkpError
from ..graphs import attribute_graphs, subgraphs
from ..io.model_file import first_line


def constant_tensors(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors fixed in the file, and which of them are ``Identity`` copies of which.

    Fixed means: initializers (not overridable graph inputs), ``Constant`` outputs, and
    ``Identity`` of those (exporters deduplicate parameters that way).
    """
    found, copies = _constant_protos(model)
    return {name: _array(t) for name, t in found.items()}, copies


def constant_lookup(model: onnx.ModelProto) -> Callable[[str], Optional[np.ndarray]]:
    """The values of a tensor fixed in the file (as :func:`constant_tensors`), or None: read on
    demand, so the weights nobody asks for are never converted."""
    found, _ = _constant_protos(model)
    return functools.lru_cache(maxsize=None)(lambda name: _array(found[name]) if name in found else None)


def _constant_protos(model: onnx.ModelProto) -> tuple[dict[str, onnx.TensorProto], dict[str, str]]:
    overridable = {i.name for i in model.graph.input}
    found = {t.name: t for t in model.graph.initializer if t.name not in overridable}
    copies: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    found[node.output[0]] = attr.t
        elif node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input[0] in found:
            found[node.output[0]] = found[node.input[0]]
            copies[node.output[0]] = node.input[0]
    return found, copies


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(tensor)
    except ValueError as error:  # data that does not fit the declared shape, in a hostile file
        raise GkpError(
            f"tensor {tensor.name!r}: its data does not match its type and shape ({first_line(error)})"
        ) from None


def _subgraph_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    for graph in subgraphs(node):
        for inner in graph.node:
            yield inner
            yield from _subgraph_nodes(inner)


def tensor_uses(model: onnx.ModelProto) -> Counter:
    """How many node inputs (subgraphs included) and graph outputs read each tensor name."""
    uses: Counter = Counter(o.name for o in model.graph.output)
    for node in model.graph.node:
        uses.update(n for n in node.input if n)
        for inner in _subgraph_nodes(node):
            uses.update(n for n in inner.input if n)
    return uses


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every float initializer and Constant tensor: the model's parameters, those
    of If/Loop branches included (each name once: a branch cannot shadow an outer name)."""
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    counted: dict[str, int] = {}

    def visit(graph: onnx.GraphProto) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value":
                    tensors.append(onnx.TensorProto(name=node.output[0], dims=attr.t.dims, data_type=attr.t.data_type))
                for inner in attribute_graphs(attr):
                    visit(inner)
        counted.update((t.name, math.prod(t.dims)) for t in tensors if t.data_type in float_types)

    visit(model.graph)
    return sum(counted.values())
