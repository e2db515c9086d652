"""Which filters a source Conv stops computing, decided from the graph and the plans alone.

A site with ``G = 1`` gathers ``in_index`` (distinct channels) from its input. Where that
input comes from a ``source`` Conv (``analyse``: through single-reader channel-wise nodes and
depthwise Convs) that is itself dense (pruned with ``G = 1``, or left whole), the source can
compute exactly the gathered channels, in gather order: its filters ``in_index`` (and the
chain's parameters, and the depthwise Convs' filters, alike), and the gather goes. The
others are *dead filters*. This is plain data, known before any rewrite: MACs and params
follow from it, and ``rewrite`` carries it out (``rewrite(..., trims=...)``). No
onnx-graphsurgeon here: the chain's nodes are read as ONNX protos, with the one crossing
rule of ``ops.channel_params`` (``analyse.chain_crossable``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import onnx

from ..analyse.graph import constant_lookup
from ..analyse.shapes import kept_macs
from ..analyse.sites import ConvSite, Skip, chain_crossable
from ..layer.planner import LayerPlan


@dataclass(frozen=True)
class Trim:
    """A Conv that computes only ``kept`` of its ``filters`` filters, in this order (its reader's
    gather order); the rest are never computed."""

    kept: tuple[int, ...]
    filters: int

    @property
    def dead(self) -> list[int]:
        """The filters no longer computed, ascending."""
        return sorted(set(range(self.filters)) - set(self.kept))


def keeps_gather(site: ConvSite, trims: dict[int, Trim]) -> bool:
    """Whether the pruned ``site`` still reads its input through a channel Gather: its source is
    not trimmed to compute the kept channels for it (none, or read by others too, e.g. a
    residual stream)."""
    return site.source is None or site.source[0] not in trims


def decide_trims(
    model: onnx.ModelProto, sites: Sequence[ConvSite], plans: Sequence[LayerPlan], whole: Sequence[ConvSite] = ()
) -> dict[int, Trim]:
    """Per trimmed node index (a source Conv and the depthwise Convs of its chain), what it keeps.

    ``sites`` and ``plans`` are the layers being pruned, ``whole`` the Convs left dense that a
    site may read as its source (sites left whole, and ``Analysis.sources``). ``model`` is the
    analysed graph; the weights of the sites and ``whole`` are read from them, not from it. The
    same decisions as the rewrite carries out: :func:`conv.rewrite` takes them.
    """
    nodes = model.graph.node
    constant = constant_lookup(model)
    dense = {s.node_index: s for s in whole}
    dense.update((s.node_index, s) for s, p in zip(sites, plans) if p.groups == 1)
    reordered = {
        s.node_index for s, p in zip(sites, plans) if not np.array_equal(p.filter_order, np.arange(p.filter_order.size))
    }
    trims: dict[int, Trim] = {}
    for site, plan in zip(sites, plans):
        if site.source is None or site.source[0] not in dense or site.source[0] in reordered:
            continue
        index = plan.in_index
        filters = int(dense[site.source[0]].weight.shape[0])
        if np.unique(index).size != index.size or not chain_crossable(
            nodes, site.source, index, filters, site.weight.ndim, constant
        ):
            continue
        trim = Trim(tuple(int(i) for i in index), filters)
        for i in [site.source[0]] + [i for i in site.source[1] if nodes[i].op_type == "Conv"]:
            trims[i] = trim
    return trims


def trimmed(skip: Skip, trims: dict[int, Trim]) -> Skip:
    """A Conv left whole (or depthwise, on a trimmed chain) whose unread filters the plan's trims
    drop, with its MACs after."""
    trim = trims.get(skip.node_index)
    if trim is None or not trim.dead:
        return skip
    dead = trim.dead
    return replace(
        skip, dead_filters=tuple(dead), macs_after=kept_macs(skip.macs, trim.filters - len(dead), trim.filters)
    )
