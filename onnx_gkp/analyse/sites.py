"""Find the Convs that can be pruned, read their weights, and say why the others cannot.

Knows ONNX, not the math: it hands the planner numpy weights (:class:`ConvSite`) and records a
reason for every Conv-like node left alone (:class:`Skip`). Shapes come from ONNX shape
inference run on a copy whose dynamic input dims are fixed to the test shapes (and, for Conv
outputs it cannot resolve, from one onnxruntime run), so MACs are counted for the shape that
validation runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import numpy as np
import onnx

from ..errors import GkpError
from ..graphs import group_of
from .bn_stats import ChannelStats, Found, StatsReader
from .geometry import ConvGeometry, geometry_of
from .graph import constant_tensors, tensor_uses
from .ops import CONV_LIKE, ChannelNode, channel_params, is_depthwise, rule
from .shapes import conv_macs, inferred_shapes, resolve_input_shapes

FLOAT_TYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class ConvSite:
    """A prunable Conv: where it is, its constant weight and bias, its per-sample MACs, its
    geometry at the test shape (None where the input shape is unknown), and its ``source``:
    ``(producer, chain)`` node indices when its input comes from another prunable Conv (or a
    dense Conv outside the sites, :attr:`Analysis.sources`) through single-reader channel-wise
    nodes and depthwise Convs only (``_with_sources``), so channels it never reads need not be
    computed at all (``trims.decide_trims`` says which, once the plans are known); and the
    statistics of its input channels read off the graph (``bn_stats.py``), or why there are
    none, for data-free compensation."""

    node_index: int
    node: str
    weight: np.ndarray
    bias: Optional[np.ndarray]
    macs: Optional[int]
    geometry: Optional[ConvGeometry] = None
    source: Optional[tuple[int, tuple[int, ...]]] = None
    input_stats: Found = "input statistics not read"


@dataclass(frozen=True)
class Skip:
    """A Conv-like node left alone, and why. A Conv left whole may still stop computing
    ``dead_filters`` that no kept kernel downstream reads (``macs_after`` then says so)."""

    node_index: int
    node: str
    op_type: str
    reason: str
    macs: Optional[int] = None
    dead_filters: tuple[int, ...] = ()
    macs_after: Optional[int] = None


@dataclass(frozen=True)
class Analysis:
    """The sites, the skips, the input shapes; and ``sources``: Convs left out of the sites
    (``--include``, too few input channels, ...) that a site reads as its ``source``. They are
    not pruned, but stop computing the filters their reader does not keep when it has ``G = 1``."""

    sites: list[ConvSite]
    skipped: list[Skip]
    input_shapes: dict[str, tuple[int, ...]]
    sources: list[ConvSite] = field(default_factory=list)


def _sharing(name: str, copies: dict[str, str], uses: Counter) -> int:
    """Other readers of a tensor, counted along its chain of Identity copies."""
    others = uses[name] - 1
    while name in copies:
        name = copies[name]
        others += uses[name] - 1
    return others


def _refusal(
    node: onnx.NodeProto, consts: dict[str, np.ndarray], copies: dict[str, str], uses: Counter, min_in_channels: int
) -> Optional[str]:
    """Why this Conv cannot be pruned, or None."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return f"{node.op_type} is not pruned"
    group = group_of(node)
    weight = consts.get(node.input[1])
    if group != 1:
        depthwise = weight is not None and weight.shape[1] == 1
        return f"{'depthwise' if depthwise else 'grouped'} Conv (group={group})"
    if weight is None:
        return "weight is not a constant (computed at run time or a graph input)"
    shared = _sharing(node.input[1], copies, uses)
    if shared:
        return f"weight {node.input[1]!r} is shared with {shared} other use(s)"
    if weight.dtype.type not in FLOAT_TYPES or weight.ndim < 3:
        return f"weight of dtype {weight.dtype} and rank {weight.ndim} is not a float Conv weight"
    if len(node.input) > 2 and node.input[2] and node.input[2] not in consts:
        return "bias is not a constant"
    if weight.shape[1] < min_in_channels:
        return f"too few input channels to prune ({weight.shape[1]} < {min_in_channels})"
    return None


def _check_conv(
    node: onnx.NodeProto, weight: np.ndarray, bias: Optional[np.ndarray], input_shape: Optional[tuple[int, ...]]
) -> Optional[str]:
    """For a Conv about to become a site: GkpError if the model cannot run it as written or its
    parameters are not numbers; a reason to leave it whole if it has nothing to prune."""
    name = f"Conv {node.name or node.output[0]!r}"
    if weight.size == 0:
        return f"its weight {list(weight.shape)} is empty: nothing to prune"
    if bias is not None and bias.shape != (weight.shape[0],):
        raise GkpError(
            f"{name}: bias of shape {list(bias.shape)} for {weight.shape[0]} output filters (an invalid model)"
        )
    if input_shape is not None and len(input_shape) > 1 and input_shape[1] != weight.shape[1]:
        raise GkpError(
            f"{name}: weight for {weight.shape[1]} input channels, but its input has {input_shape[1]} (an invalid "
            "model)"
        )
    if not np.isfinite(weight).all() or (bias is not None and not np.isfinite(bias).all()):
        raise GkpError(
            f"{name}: its weight or bias holds NaN or infinite values (a broken model: nothing to prune or validate)"
        )
    return None


def analyse(
    model: onnx.ModelProto,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    test_shapes: Optional[dict[str, tuple[int, ...]]] = None,
    min_in_channels: int = 4,
) -> Analysis:
    """Split the Conv-like nodes of the main graph into prunable sites and skips."""
    try:
        include_re = re.compile(include) if include else None
        exclude_re = re.compile(exclude) if exclude else None
    except re.error as error:
        raise GkpError(f"bad --include/--exclude pattern: {error}") from None
    input_shapes = resolve_input_shapes(model, test_shapes)
    shapes = inferred_shapes(model, input_shapes)
    consts, copies = constant_tensors(model)
    uses = tensor_uses(model)
    statistics = StatsReader(model, consts)
    sites: list[ConvSite] = []
    skipped: list[Skip] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in CONV_LIKE:
            continue
        weight = consts.get(node.input[1]) if len(node.input) > 1 else None
        weight_shape = weight.shape if weight is not None else shapes.get(node.input[1])
        macs = conv_macs(weight_shape, shapes.get(node.output[0])) if weight_shape and node.op_type == "Conv" else None
        reason = _refusal(node, consts, copies, uses, min_in_channels)
        if reason is None and include_re and not include_re.search(node.name):
            reason = "not matched by --include"
        if reason is None and exclude_re and exclude_re.search(node.name):
            reason = "matched by --exclude"
        if reason is not None:
            skipped.append(Skip(index, node.name, node.op_type, reason, macs))
            continue
        bias = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        empty = _check_conv(node, weight, bias, shapes.get(node.input[0]))
        if empty is not None:
            skipped.append(Skip(index, node.name, node.op_type, empty, macs))
            continue
        attributes = {a.name: _plain(onnx.helper.get_attribute_value(a)) for a in node.attribute}
        geometry = geometry_of(shapes.get(node.input[0]), weight, attributes, bias is not None)
        stats = statistics(node.input[0])
        if isinstance(stats, ChannelStats) and stats.mean.shape != (weight.shape[1],):
            stats = f"input mean unknown: {stats.mean.size} channel statistics for {weight.shape[1]} input channels"
        sites.append(ConvSite(index, node.name, weight, bias, macs, geometry, input_stats=stats))
    sites, sources = _with_sources(model, sites, uses, consts, copies, skipped)
    return Analysis(sites, skipped, input_shapes, sources)


def _with_sources(
    model: onnx.ModelProto, sites: list[ConvSite], uses: Counter, consts: dict, copies: dict, skipped: list[Skip]
) -> tuple[list[ConvSite], list[ConvSite]]:
    """Each site with its ``source`` filled in where one exists; and the Convs outside the sites
    that are a site's source (:attr:`Analysis.sources`).

    The chain from a site back to its source crosses, each read by the next alone: per-channel
    nodes with constant parameters (BatchNormalization, activations, Mul/Add/... by constants,
    pooling), depthwise Convs (channel multiplier 1), and the swish ``Mul(t, Sigmoid(t))`` (or
    HardSigmoid) whose ``t`` is read by those two nodes alone. It ends at the first Conv that
    mixes channels: a site, or a dense Conv left out of the sites whose filters can still be
    dropped (:func:`_trimmable`), else there is no source; and only if the source's filters can
    be taken through every node of the chain (:func:`chain_crossable`, the rewrite's rule).
    """
    nodes = model.graph.node
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    prunable = {s.node_index: s for s in sites}
    macs = {s.node_index: s.macs for s in skipped}
    outside: dict[int, ConvSite] = {}
    found = []
    for site in sites:
        chain: list[int] = []
        tensor, source, readers = nodes[site.node_index].input[0], None, 1
        while uses[tensor] == readers and tensor in producer:
            index, readers = producer[tensor], 1
            node = nodes[index]
            if index in prunable or (index in macs and _trimmable(node, consts, copies, uses)):
                origin = prunable.get(index) or outside.get(index) or _outside_site(index, node, consts, macs[index])
                # Channel c of the reader is filter c of the source, unless a constant broadcast
                # along the chain widened the channels (a Mul of one filter by 16 scales, say);
                # and the filters can be taken through every node of the chain (ops.py).
                candidate = (index, tuple(reversed(chain)))
                filters = origin.weight.shape[0]
                if filters == site.weight.shape[1] and chain_crossable(
                    nodes, candidate, np.arange(filters), filters, site.weight.ndim, consts.get
                ):
                    source = candidate
                    if index not in prunable:
                        outside[index] = origin
                break
            if len([o for o in node.output if o]) != 1 or node.domain not in ("", "ai.onnx") or not node.input:
                break  # a MaxPool with its indices, say
            swish = _swish(node, producer, nodes, uses)
            if swish is not None:
                chain += [index, swish]
                tensor, readers = nodes[swish].input[0], 2
                continue
            variables = [n for n in node.input[1:] if n and n not in consts]
            if rule(node.op_type).channels is None or variables:
                break
            if node.op_type == "Conv" and not _depthwise(node, consts):
                break  # it mixes channels: a grouped Conv, or one with a channel multiplier
            chain.append(index)
            tensor = node.input[0]
        found.append(replace(site, source=source))
    return found, sorted(outside.values(), key=lambda s: s.node_index)


def chain_crossable(
    nodes: Sequence[onnx.NodeProto],
    source: tuple[int, tuple[int, ...]],
    index: np.ndarray,
    filters: int,
    rank: int,
    constant: Callable[[str], Optional[np.ndarray]],
) -> bool:
    """Whether channels ``index`` of a ``source`` Conv of ``filters`` filters (``(producer,
    chain)`` node indices, :attr:`ConvSite.source`) can be taken through every node of its
    chain, its tensors of rank ``rank``: :func:`ops.channel_params` of each, its constants read
    by ``constant``."""
    producer, chain = source
    carried = {nodes[i].output[0] for i in (producer, *chain)}
    for i in chain:
        node = nodes[i]
        group = group_of(node)
        view = ChannelNode(
            node.op_type,
            len(node.output),
            group,
            tuple(bool(n) for n in node.input),
            lambda k, node=node: constant(node.input[k]),
        )
        variables = {k for k, name in enumerate(node.input) if name in carried}
        if channel_params(view, variables, index, filters, rank) is None:
            return False
    return True


def _swish(
    node: onnx.NodeProto, producer: dict[str, int], nodes: Sequence[onnx.NodeProto], uses: Counter
) -> Optional[int]:
    """The Sigmoid (or HardSigmoid) node of a swish ``Mul(t, Sigmoid(t))`` whose gate only the
    Mul reads, or None."""
    if node.op_type != "Mul" or len(node.input) != 2 or node.input[0] == node.input[1]:
        return None
    for gate, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        index = producer.get(gate)
        if index is None or uses[gate] != 1:
            continue
        sigmoid = nodes[index]
        if (
            rule(sigmoid.op_type).gate is not None
            and sigmoid.domain in ("", "ai.onnx")
            and list(sigmoid.input) == [other]
            and len(sigmoid.output) == 1
        ):
            return index
    return None


def _trimmable(node: onnx.NodeProto, consts: dict, copies: dict, uses: Counter) -> bool:
    """A dense Conv outside the sites (left out by ``--include``, with too few input channels,
    ...) that can still stop computing filters: constant float weight read by it alone, bias
    constant or absent, finite numbers. Its output does not change; only unread filters go."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    if group_of(node) != 1:
        return False
    weight = consts.get(node.input[1])
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if weight is None or weight.dtype.type not in FLOAT_TYPES or weight.ndim < 3 or weight.size == 0:
        return False
    if _sharing(node.input[1], copies, uses) or (
        bias is not None and (bias not in consts or consts[bias].shape != weight.shape[:1])
    ):
        return False
    return bool(np.isfinite(weight).all()) and (bias is None or bool(np.isfinite(consts[bias]).all()))


def _outside_site(index: int, node: onnx.NodeProto, consts: dict, macs: Optional[int]) -> ConvSite:
    bias = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return ConvSite(index, node.name, consts[node.input[1]], bias, macs)


def _depthwise(node: onnx.NodeProto, consts: dict) -> bool:
    """A Conv with a constant weight whose output channel ``c`` reads input channel ``c`` alone."""
    weight = consts.get(node.input[1]) if len(node.input) > 1 else None
    group = group_of(node)
    return weight is not None and is_depthwise(weight.shape, group)


def _plain(value: object) -> object:
    """Attribute values as JSON-friendly Python: lists of ints, str for bytes."""
    if isinstance(value, bytes):
        return value.decode()
    return list(value) if isinstance(value, (list, tuple)) else value
