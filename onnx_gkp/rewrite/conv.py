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
Which channels cross which node is the one rule of ``ops.py``; which source Convs stop
computing unread filters is decided before, as data (``trims.py``), and carried out here.

Original tensor names are kept wherever a tensor survives in the original order, so consumers
and graph outputs are untouched. Strides, pads, dilations and auto_pad stay as they were; the
model keeps its IR version, opsets and metadata. This is the only module that touches
onnx-graphsurgeon; it knows nothing of how plans are made.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..analyse.ops import Changes, ChannelNode, channel_params
from ..analyse.sites import ConvSite
from ..graphs import attribute_graphs
from ..layer.planner import LayerPlan
from ..limits import EXTERNAL_MIN, STRIPPED
from ..plan.trims import Trim, decide_trims, keeps_gather

IN_GATHER, RESTORE = "gkp_gather_in", "gkp_restore"


@dataclass(frozen=True)
class Rewritten:
    """The pruned model, the same model exposing the ``probes`` tensors, its Gather count, and per
    trimmed Conv (by node index: sources and the depthwise Convs of their chains) the filters no
    longer computed because nothing reads them, and how many it had.

    ``probed`` holds no copy of the large weights ``model`` has too: they are stubs
    (``load.STRIPPED``) of the same name, filled from ``model`` to run it.
    """

    model: onnx.ModelProto
    probed: Optional[onnx.ModelProto]
    gathers: int
    dead_filters: dict[int, list[int]]
    probes: list[str]
    filters: dict[int, int] = dataclasses.field(default_factory=dict)  # per trimmed node: its filters before


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
        gs.Node(
            "Gather", f"{original.name}/{RESTORE}", {"axis": 1}, inputs=[permuted.tensor, index], outputs=[original]
        )
    )


def _regroup(
    graph: gs.Graph, conv: gs.Node, site: ConvSite, plan: LayerPlan, base: str
) -> tuple[gs.Node, Optional[_Permuted]]:
    """Rewrite one Conv in place; its input gather, and its output if it comes out permuted."""
    x, y = conv.inputs[0], conv.outputs[0]
    gathered = _intermediate(f"{base}/gkp_gathered", x, int(plan.in_index.size))
    in_index = gs.Constant(f"{base}/gkp_in_index", plan.in_index)
    gather = gs.Node("Gather", f"{base}/{IN_GATHER}", {"axis": 1}, inputs=[x, in_index], outputs=[gathered])
    graph.nodes.append(gather)
    conv.inputs[0] = gathered
    _set_constant(conv, 1, f"{base}/gkp_weight", plan.grouped_weight(site.weight))
    bias = plan.compensated_bias(site.bias, site.weight.dtype)
    if bias is not None:
        constant = gs.Constant(f"{base}/gkp_bias", plan.permuted_bias(bias))
        if len(conv.inputs) > 2:
            conv.inputs[2] = constant
        else:
            conv.inputs.append(constant)
    conv.attrs["group"] = plan.groups
    order = plan.filter_order
    if np.array_equal(order, np.arange(order.size)):
        return gather, None
    permuted = _Permuted(_intermediate(f"{y.name}/gkp_permuted", y, None), order, site.weight.ndim)
    conv.outputs[0] = permuted.tensor
    _restore(graph, permuted, y)
    return gather, permuted


def _set_constant(node: gs.Node, index: int, name: str, values: np.ndarray) -> None:
    """``node.inputs[index] = values``, the replaced constant's array freed at once if nothing
    else reads it (graphsurgeon tensors sit in reference cycles, which wait for the collector)."""
    old = node.inputs[index]
    node.inputs[index] = gs.Constant(name, values)
    if isinstance(old, gs.Constant) and not old.outputs:
        old.values = np.zeros(0, np.float32)


def _constant(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """The values of a constant: an initializer, a ``Constant`` node's output or an ``Identity``
    of either (what ``analyse`` counts as constant, so a chain it accepts is one this rewrites)."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
        return np.asarray(node.attrs["value"].values)
    return _constant(node.inputs[0]) if node.op == "Identity" and node.inputs else None


def _channel_params(
    node: gs.Node, variables: set[int], index: np.ndarray, channels: int, rank: int
) -> Optional[Changes]:
    """:func:`ops.channel_params` of a graphsurgeon node."""
    view = ChannelNode(
        node.op,
        len(node.outputs),
        node.attrs.get("group", 1),
        tuple(bool(t.name) for t in node.inputs),
        lambda i: _constant(node.inputs[i]),
    )
    return channel_params(view, variables, index, channels, rank)


def _apply(node: gs.Node, changes: Changes, tag: str = "param") -> None:
    replacements, attrs = changes
    base = node.name or node.outputs[0].name
    for i, values in replacements:
        _set_constant(node, i, f"{base}/gkp_{tag}{i}", np.ascontiguousarray(values))
    node.attrs.update(attrs)


def _fold(graph: gs.Graph, carried: dict[str, _Permuted]) -> None:
    """Carry every permuted tensor forward as far as its consumers allow (see the module doc)."""
    originals = {t.name: t for t in graph.tensors().values()}
    top = {id(n) for n in graph.nodes}  # a reader inside an If/Loop branch reads the restored order
    queue = list(carried)
    while queue:
        name = queue.pop(0)
        permuted, original = carried[name], originals[name]
        for node in list(original.outputs):
            if id(node) not in top:
                continue
            if node.op == "Gather" and node.name.endswith(IN_GATHER) and node.inputs[0] is original:
                index = _constant(node.inputs[1])
                node.inputs[0] = permuted.tensor
                node.inputs[1] = gs.Constant(f"{node.name}/gkp_composed", permuted.position[index])
                continue
            if node.op == "Conv" and node.inputs[0] is original and node.attrs.get("group", 1) == 1:
                weight = _constant(node.inputs[1])
                if weight is not None and len(node.inputs[1].outputs) == 1 and weight.shape[1] == permuted.order.size:
                    node.inputs[0] = permuted.tensor
                    _set_constant(node, 1, f"{node.name or name}/gkp_weight_in", weight[:, permuted.order])
                continue
            variables = {i for i, t in enumerate(node.inputs) if t.name in carried}
            if any(not np.array_equal(carried[node.inputs[i].name].order, permuted.order) for i in variables):
                continue  # e.g. a residual Add of two differently ordered tensors
            if any(isinstance(t, gs.Variable) for i, t in enumerate(node.inputs) if i not in variables and t.name):
                continue  # meets a tensor in the original order
            changes = _channel_params(node, variables, permuted.order, permuted.order.size, permuted.rank)
            if changes is None:
                continue
            _apply(node, changes)
            for i in variables:
                node.inputs[i] = carried[node.inputs[i].name].tensor
            out = node.outputs[0]
            moved = _Permuted(_intermediate(f"{out.name}/gkp_permuted", out, None), permuted.order, permuted.rank)
            node.outputs[0] = moved.tensor
            _restore(graph, moved, out)
            carried[out.name] = moved
            queue.append(out.name)


def _trim(
    nodes: list[gs.Node],
    sites: Sequence[ConvSite],
    trims: dict[int, Trim],
    gathers: dict[int, gs.Node],
    convs: dict[int, ConvSite],
) -> None:
    """Stop computing channels nobody reads, as ``trims`` decided (:func:`trims.decide_trims`):
    fold each trimmed source's reader's input gather back into the source and its chain."""
    for site in sites:
        if not keeps_gather(site, trims):
            index = np.asarray(trims[site.source[0]].kept, dtype=np.int64)
            _trim_source(nodes, site, convs[site.source[0]], index, gathers[site.node_index])


def _trim_source(nodes: list[gs.Node], site: ConvSite, source: ConvSite, index: np.ndarray, gather: gs.Node) -> None:
    """The source of ``site`` computes channels ``index`` alone, in this order, the chain's
    parameters follow (a depthwise Conv keeps those filters and ``group`` shrinks to match),
    and ``site`` reads them without its input gather."""
    producer, chain = nodes[site.source[0]], [nodes[i] for i in site.source[1]]
    # The weight as rewritten so far (regrouped, or its input axis permuted by _fold); a
    # weight the graph computes from a Constant node or Identity is still the original.
    weight = _constant(producer.inputs[1])
    weight = source.weight if weight is None else weight
    # The tensors the chain carries: a swish Mul reads two of them, Clip's bounds are none.
    carried = {id(n.outputs[0]) for n in [producer] + chain}
    changes = [
        _channel_params(
            n, {i for i, t in enumerate(n.inputs) if id(t) in carried}, index, weight.shape[0], site.weight.ndim
        )
        for n in chain
    ]
    if any(c is None for c in changes):
        raise ValueError(
            f"the trim of {producer.name!r} cannot cross its chain to {site.node!r}: decided for another graph"
        )
    has_bias = len(producer.inputs) > 2 and producer.inputs[2].name
    bias = _constant(producer.inputs[2]) if has_bias else None
    bias = source.bias if has_bias and bias is None else bias
    _apply(producer, ([(1, weight[index])] + ([] if bias is None else [(2, bias[index])]), {}), "trim")
    for node, change in zip(chain, changes):
        _apply(node, change, "trim")
    for node in [producer] + chain:
        out = node.outputs[0]
        if out.shape is not None and len(out.shape) > 1:
            out.shape = [out.shape[0], int(index.size), *out.shape[2:]]
    nodes[site.node_index].inputs[0] = gather.inputs[0]
    gather.inputs.clear()
    gather.outputs.clear()


def _export(graph: gs.Graph, model: onnx.ModelProto, shared: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """``graph`` as a model stamped like ``model``; its large constants named in ``shared`` go out as
    stubs (``load.STRIPPED``)."""
    graph.cleanup().toposort()
    # onnx-graphsurgeon builds every new initializer, then copies them all into the graph: the
    # new weights go out as empty placeholders and are moved in one at a time afterwards, so
    # they are never in memory twice (what keeps large models in bounds). This consumes
    # ``graph``: its constants are left empty.
    held = {}
    for tensor in graph.tensors().values():
        if (
            isinstance(tensor, gs.Constant)
            and isinstance(tensor._values, np.ndarray)
            and tensor._values.nbytes >= EXTERNAL_MIN
        ):
            held[tensor.name] = tensor._values
            tensor.values = np.zeros(0, tensor._values.dtype)
    pruned = gs.export_onnx(graph, do_type_check=False, opset_imports=list(model.opset_import))
    _hoist(pruned.graph, {t.name for t in model.graph.initializer}, pruned.graph)
    for initializer in pruned.graph.initializer:
        if initializer.name in held and initializer.name in shared:
            array = held.pop(initializer.name)
            stub = onnx.TensorProto(
                name=initializer.name, dims=array.shape, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
            )
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value=STRIPPED)
            initializer.CopyFrom(stub)
        elif initializer.name in held:
            initializer.CopyFrom(numpy_helper.from_array(held.pop(initializer.name), initializer.name))
    pruned.ir_version = model.ir_version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(pruned, field, getattr(model, field))
    del pruned.metadata_props[:]
    pruned.metadata_props.extend(model.metadata_props)
    return pruned


def _hoist(graph: onnx.GraphProto, top_level: set[str], top: onnx.GraphProto) -> None:
    """Move back to ``top`` the initializers onnx-graphsurgeon copied into If/Loop branches
    (``graph``'s subgraphs, recursively) that the input model kept at its top level.

    graphsurgeon exports every constant a branch reads into that branch, so a weight shared by
    the main graph and a branch would be stored twice (and, here, as the empty placeholder
    :func:`_export` refills at the top level only). ONNX forbids a branch to shadow an outer
    name, so a name is one tensor: it is kept once, at the top, where the input had it.
    """
    present = {t.name for t in top.initializer}
    for node in graph.node:
        for attr in node.attribute:
            for sub in attribute_graphs(attr):
                local = []
                for tensor in sub.initializer:
                    if tensor.name not in top_level:
                        local.append(tensor)
                    elif tensor.name not in present:
                        top.initializer.add().CopyFrom(tensor)
                        present.add(tensor.name)
                del sub.initializer[:]
                sub.initializer.extend(local)
                _hoist(sub, top_level, top)


def _collected(function: Callable[..., Rewritten]) -> Callable[..., Rewritten]:
    """``function``, then a garbage collection once its frame is gone: the graph's nodes and
    tensors form cycles, and their copies of the weights should be freed at once."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Rewritten:
        try:
            return function(*args, **kwargs)
        finally:
            gc.collect()

    return run


@_collected
def rewrite(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    plans: Sequence[LayerPlan],
    probes: Sequence[str] = (),
    fold: bool = True,
    whole: Sequence[ConvSite] = (),
    trims: Optional[dict[int, Trim]] = None,
) -> Rewritten:
    """The pruned model; with ``probes``, also a copy that outputs those original tensors.

    With ``fold`` (the default) permutations are carried forward (:func:`_fold`). ``trims``
    (by default :func:`trims.decide_trims` of these sites, plans and the Convs left ``whole``,
    none without ``fold``) says which sources stop computing filters: their readers' input
    gathers are folded back into them (:func:`_trim`); a trimmed Conv's output only exists in
    part, so it is dropped from ``probes`` (its readers are probed).
    """
    if trims is None:
        trims = decide_trims(model, sites, plans, whole) if fold else {}
    graph = gs.import_onnx(model)
    nodes = list(graph.nodes)
    for site in whole:  # the model may hold their weights no more (api: release): the sites do
        weight = nodes[site.node_index].inputs[1]
        if isinstance(weight, gs.Constant):
            weight.values = site.weight
            weight.data_location = None  # the stub's "external" mark would go out with the data
    carried: dict[str, _Permuted] = {}
    gathers: dict[int, gs.Node] = {}
    for site, plan in zip(sites, plans):
        conv = nodes[site.node_index]
        output = conv.outputs[0].name
        gathers[site.node_index], permuted = _regroup(graph, conv, site, plan, conv.name or f"{output}_conv")
        if permuted is not None:
            carried[output] = permuted
    if fold:
        _fold(graph, carried)
    _trim(nodes, sites, trims, gathers, {s.node_index: s for s in [*whole, *sites]})
    partial = {nodes[i].outputs[0].name for i in trims}
    probed, tensors = None, graph.tensors()
    wanted = [n for n in dict.fromkeys(probes) if n not in partial and n in tensors]
    if wanted:
        extra = [tensors[n] for n in wanted if tensors[n] not in graph.outputs]
        graph.outputs.extend(extra)
        copy = graph.copy()  # shares the constants' arrays with ``graph``
        del graph.outputs[len(graph.outputs) - len(extra) :]
        # What the pruned model will hold the probed one leaves out: it is never in memory twice.
        shared = frozenset(n for n, t in graph.cleanup().tensors().items() if isinstance(t, gs.Constant))
        # graph.copy() drops spare copies of the constants (sharing their arrays) in reference
        # cycles: collected now, the arrays are freed as the export below moves them out.
        gc.collect()
        probed = _export(copy, model, shared)
    pruned = _export(graph, model)
    count = sum(n.op_type == "Gather" and n.name.endswith((IN_GATHER, RESTORE)) for n in pruned.graph.node)
    return Rewritten(
        pruned, probed, count, {i: t.dead for i, t in trims.items()}, wanted, {i: t.filters for i, t in trims.items()}
    )
