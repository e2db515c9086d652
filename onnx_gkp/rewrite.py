"""Graph surgery: turn each planned Conv into gather -> grouped Conv, and fold the reorders away.

For a Conv ``y = Conv(x, W, b)`` and its plan::

    x_k = Gather(x, in_index, axis=1)            # G*m kept channels, group by group
    y_g = Conv(x_k, W', b[filter_order], group=G) # channel g*n+i is filter S_g[i]
    y   = Gather(y_g, out_index, axis=1)         # back to the original filter order

Restoring the order costs a Gather per layer, and one between a Conv and its
BatchNormalization also stops onnxruntime fusing them. So the permuted tensor is carried
forward instead (:func:`_fold`): through per-channel ops (BatchNormalization, activations,
Mul/Add by per-channel constants, depthwise Convs), whose parameters are permuted alike; into
the next pruned Conv's input gather (the two index lists composed); into a dense Conv's weight
(its input axis permuted). The original order is restored only where the channels meet
something else: a residual Add with a differently ordered tensor, a Concat, a graph output.

Original tensor names are kept wherever a tensor survives in the original order, so consumers
and graph outputs are untouched. Strides, pads, dilations and auto_pad stay as they were; the
model keeps its IR version, opsets and metadata. This is the only module that touches
onnx-graphsurgeon; it knows nothing of how plans are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .analyse import ConvSite
from .plan import LayerPlan

IN_GATHER, RESTORE = "gkp_gather_in", "gkp_restore"
UNARY = {
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Clip", "Identity", "Neg", "Abs", "Exp", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Cast",
}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "PRelu"}


@dataclass(frozen=True)
class Rewritten:
    """The pruned model, the same model exposing the ``probes`` tensors, and its Gather count."""

    model: onnx.ModelProto
    probed: Optional[onnx.ModelProto]
    gathers: int


@dataclass
class _Permuted:
    """A tensor now carried in permuted channel order: ``tensor[:, j] = original[:, order[j]]``."""

    tensor: gs.Variable
    order: np.ndarray
    rank: int

    @property
    def position(self) -> np.ndarray:
        """``position[c]`` = where original channel ``c`` now sits."""
        return np.argsort(self.order, kind="stable").astype(np.int64)


def _intermediate(name: str, like: gs.Tensor, channels: Optional[int]) -> gs.Variable:
    """A new tensor shaped like ``like`` (``channels`` on axis 1); typed only if its shape is known.

    onnx.checker rejects a value_info with a type but no shape, so unknown stays unknown.
    """
    if like.shape is None or len(like.shape) < 2:
        return gs.Variable(name)
    shape = list(like.shape)
    if channels is not None:
        shape[1] = channels
    return gs.Variable(name, dtype=like.dtype, shape=shape)


def _restore(graph: gs.Graph, permuted: _Permuted, original: gs.Variable) -> None:
    """``original = Gather(permuted, position)``: dropped by cleanup if nothing reads it."""
    index = gs.Constant(f"{original.name}/gkp_position", permuted.position)
    graph.nodes.append(
        gs.Node("Gather", f"{original.name}/{RESTORE}", {"axis": 1}, inputs=[permuted.tensor, index], outputs=[original])
    )


def _regroup(graph: gs.Graph, conv: gs.Node, site: ConvSite, plan: LayerPlan, base: str) -> Optional[_Permuted]:
    """Rewrite one Conv in place; its output, if it comes out permuted."""
    x, y = conv.inputs[0], conv.outputs[0]
    gathered = _intermediate(f"{base}/gkp_gathered", x, int(plan.in_index.size))
    in_index = gs.Constant(f"{base}/gkp_in_index", plan.in_index)
    graph.nodes.append(gs.Node("Gather", f"{base}/{IN_GATHER}", {"axis": 1}, inputs=[x, in_index], outputs=[gathered]))
    conv.inputs[0] = gathered
    conv.inputs[1] = gs.Constant(f"{base}/gkp_weight", plan.grouped_weight(site.weight))
    if site.bias is not None:
        conv.inputs[2] = gs.Constant(f"{base}/gkp_bias", plan.permuted_bias(site.bias))
    conv.attrs["group"] = plan.groups
    order = plan.filter_order
    if np.array_equal(order, np.arange(order.size)):
        return None
    permuted = _Permuted(_intermediate(f"{y.name}/gkp_permuted", y, None), order, site.weight.ndim)
    conv.outputs[0] = permuted.tensor
    _restore(graph, permuted, y)
    return permuted


def _constant(tensor: gs.Tensor) -> Optional[np.ndarray]:
    return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None


def _permute_constant(values: np.ndarray, permuted: _Permuted) -> Optional[np.ndarray]:
    """A per-channel or broadcast constant in the permuted order; None if it does not broadcast per channel."""
    if values.ndim > permuted.rank:
        return None
    axis = values.ndim - (permuted.rank - 1)  # where the channel axis lands after right-alignment
    if axis < 0 or values.shape[axis] == 1:
        return values
    if values.shape[axis] != permuted.order.size:
        return None
    return np.take(values, permuted.order, axis=axis)


def _carry(
    graph: gs.Graph, node: gs.Node, carried: dict[str, _Permuted], order: np.ndarray
) -> Optional[list[tuple[int, gs.Tensor]]]:
    """The input replacements that let ``node`` run on permuted tensors, or None if it cannot."""
    op = node.op
    if len(node.outputs) != 1:
        return None
    any_carried = next(carried[t.name] for t in node.inputs if t.name in carried)
    if op == "BatchNormalization":
        if node.inputs[0].name not in carried or any(t.name in carried for t in node.inputs[1:]):
            return None
        params = [_constant(t) for t in node.inputs[1:]]
        if any(p is None or p.shape != (order.size,) for p in params):
            return None
        return [(i + 1, p[order]) for i, p in enumerate(params)]
    if op == "Conv":
        weight = _constant(node.inputs[1])
        group = node.attrs.get("group", 1)
        depthwise = weight is not None and group == order.size == weight.shape[0] and weight.shape[1] == 1
        if not depthwise or any(t.name in carried for t in node.inputs[1:]):
            return None
        changes = [(1, weight[order])]
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = _constant(node.inputs[2])
            if bias is None:
                return None
            changes.append((2, bias[order]))
        return changes
    if op not in UNARY | BINARY:
        return None
    changes = []
    for i, tensor in enumerate(node.inputs):
        if tensor.name in carried:
            if not np.array_equal(carried[tensor.name].order, order):
                return None
            continue
        if op in UNARY and i > 0:
            continue  # Clip's scalar bounds and the like
        values = _constant(tensor)
        moved = None if values is None else _permute_constant(values, any_carried)
        if moved is None:
            return None
        if moved is not values:
            changes.append((i, moved))
    return changes


def _fold(graph: gs.Graph, carried: dict[str, _Permuted]) -> None:
    """Carry every permuted tensor forward as far as its consumers allow (see the module doc)."""
    originals = {t.name: t for t in graph.tensors().values()}
    queue = list(carried)
    while queue:
        name = queue.pop(0)
        permuted, original = carried[name], originals[name]
        for node in list(original.outputs):
            if node.op == "Gather" and node.name.endswith(IN_GATHER) and node.inputs[0] is original:
                index = _constant(node.inputs[1])
                node.inputs[0] = permuted.tensor
                node.inputs[1] = gs.Constant(f"{node.name}/gkp_composed", permuted.position[index])
                continue
            if node.op == "Conv" and node.inputs[0] is original and node.attrs.get("group", 1) == 1:
                weight = _constant(node.inputs[1])
                if weight is not None and len(node.inputs[1].outputs) == 1 and weight.shape[1] == permuted.order.size:
                    node.inputs[0] = permuted.tensor
                    node.inputs[1] = gs.Constant(f"{node.name or name}/gkp_weight_in", weight[:, permuted.order])
                continue
            changes = _carry(graph, node, carried, permuted.order)
            if changes is None:
                continue
            base = node.name or node.outputs[0].name
            for i, values in changes:
                node.inputs[i] = gs.Constant(f"{base}/gkp_param{i}", np.ascontiguousarray(values))
            for i, tensor in enumerate(node.inputs):
                if tensor.name in carried:
                    node.inputs[i] = carried[tensor.name].tensor
            out = node.outputs[0]
            moved = _Permuted(_intermediate(f"{out.name}/gkp_permuted", out, None), permuted.order, permuted.rank)
            node.outputs[0] = moved.tensor
            _restore(graph, moved, out)
            carried[out.name] = moved
            queue.append(out.name)


def _export(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    graph.cleanup().toposort()
    pruned = gs.export_onnx(graph, do_type_check=False, opset_imports=list(model.opset_import))
    pruned.ir_version = model.ir_version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(pruned, field, getattr(model, field))
    del pruned.metadata_props[:]
    pruned.metadata_props.extend(model.metadata_props)
    return pruned


def rewrite(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    plans: Sequence[LayerPlan],
    probes: Sequence[str] = (),
    fold: bool = True,
) -> Rewritten:
    """The pruned model; with ``probes``, also a copy that outputs those original tensors."""
    graph = gs.import_onnx(model)
    nodes = list(graph.nodes)
    carried: dict[str, _Permuted] = {}
    for site, plan in zip(sites, plans):
        conv = nodes[site.node_index]
        output = conv.outputs[0].name
        permuted = _regroup(graph, conv, site, plan, conv.name or f"{output}_conv")
        if permuted is not None:
            carried[output] = permuted
    if fold:
        _fold(graph, carried)
    probed = None
    if probes:
        tensors = graph.tensors()
        extra = [tensors[n] for n in dict.fromkeys(probes) if n in tensors and tensors[n] not in graph.outputs]
        graph.outputs.extend(extra)
        probed = _export(graph.copy(), model)
        del graph.outputs[len(graph.outputs) - len(extra):]
    pruned = _export(graph, model)
    gathers = sum(n.op_type == "Gather" and n.name.endswith((IN_GATHER, RESTORE)) for n in pruned.graph.node)
    return Rewritten(pruned, probed, gathers)
