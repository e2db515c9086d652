"""Plan every layer at a ratio (one for all, or each its own), choosing ``G`` from measured times.

With a cost table each layer's candidate counts are timed at its kept count, and a layer no
candidate of which is measured faster than its dense Conv is left whole; ``G`` is then chosen
for quality among the counts within ``--speed-slack`` of the fastest (``planner.plan_layer``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from tqdm import tqdm

from ..analyse.sites import ConvSite, Skip
from ..context import Context
from ..cost.table import CostTable, as_written
from ..layer.group_count import candidate_counts, none_fast_reason
from ..layer.planner import PlanOptions, plan_layer
from ..plan.model import Pairs
from ..plan.proposal import Proposal
from .curves import GRID
from .gathers import without_gathers

ALLOWANCE_REASON = "left whole: pruning even an eighth of its inputs costs more error than the allowance"

Timing = tuple[Optional[dict[int, float]], Optional[float]]
Source = Optional[tuple[Optional[ConvSite], float]]


Ratios = dict[int, float]  # per node index, the ratio a layer is planned at


def at_ratios(context: Context, ratios: Optional[Ratios] = None) -> Proposal:
    """Every site planned at its ratio (the options' one without ``ratios``), less the layers whose
    input Gather does not pay for itself end to end."""
    pairs, whole, skipped = plan_sites(context, ratios, context.options.progress)
    return without_gathers(context, Proposal(pairs, whole, skipped))


def plan_sites(
    context: Context, ratios: Optional[Ratios] = None, progress: bool = False
) -> tuple[Pairs, list[ConvSite], list[Skip]]:
    """Time and plan every site in graph order, at its own ratio where ``ratios`` gives one; the
    planned pairs, the sites left whole, and why each was.

    The Convs outside the sites a site reads as its source (``Analysis.sources``) are always
    trimmed by a ``G = 1`` reader: its ``G = 1`` is timed without the input gather, and credited
    nothing more (they are not timed)."""
    costs, options, clock = context.costs, context.plan_options, context.clock
    planned: Pairs = []
    whole: list[ConvSite] = []
    skipped: list[Skip] = []  # left whole: a reader with G = 1 may still trim their filters
    # timed sites a G = 1 reader can trim, and their time; the outside sources, untimed
    became: dict[int, tuple[Optional[ConvSite], float]] = {s.node_index: (None, 0.0) for s in context.analysis.sources}
    for site in tqdm(context.sites, desc="planning", unit="Conv", disable=None if progress else True):
        # Sites come in graph order, so a source's plan is known before its reader's.
        source = became.get(site.source[0]) if site.source is not None else None
        own = options if ratios is None else replace(options, ratio=ratios[site.node_index])
        if own.refusal(*site.weight.shape[:2]) is not None:
            skipped.append(Skip(site.node_index, site.node, "Conv", ALLOWANCE_REASON, site.macs))
            whole.append(site)
            became[site.node_index] = (site, _dense_time(site, costs))  # whole, but its readers still trim it
            continue
        with clock("measure"):
            times = candidate_times(site, own, costs, source)
        with clock("plan"):
            plan = plan_layer(site.weight, own, *times)
        if plan is None:
            skipped.append(Skip(site.node_index, site.node, "Conv", none_fast_reason(*times), site.macs))
            whole.append(site)
            if times[1] is not None:
                became[site.node_index] = (site, times[1])
        else:
            planned.append((site, plan))
            if plan.groups == 1 and plan.dense_time is not None:
                became[site.node_index] = (site, plan.times[1])
    if costs is not None:
        costs.save()
    return planned, whole, skipped


def _dense_time(site: ConvSite, costs: Optional[CostTable]) -> float:
    """The layer's measured dense time, 0 where nothing is timed (its readers are credited nothing)."""
    if costs is None or site.geometry is None:
        return 0.0
    return costs.times(site.geometry, [])[site.geometry.dense]


def candidate_times(site: ConvSite, options: PlanOptions, costs: Optional[CostTable], source: Source) -> Timing:
    """Measured seconds of every candidate count at this layer's kept count, and of the dense Conv.

    With a ``source`` (the Conv feeding this one, pruned with ``G = 1`` or left whole, and its
    measured time), ``G = 1`` needs no input gather and the source stops computing the
    channels left out (``conv._trim``): ``G = 1`` is timed without the gather and credited
    the source's time in proportion to the filters it drops, unless the source timed with fewer
    filters saves less than half of that (``costs.credited``). (Crediting always what that
    timing says was tried: it credited too little, and the ResNet-50 shape came out at 1.77x
    instead of 2.15x end to end.) ``(None, None)`` when nothing is
    measured: a fixed ``--groups``, quality-only runs, or a layer whose input shape is unknown.
    """
    if costs is None or site.geometry is None:
        return None, None
    c_out, c_in = site.weight.shape[:2]
    keep = options.kept(c_in)
    variants = {g: as_written(g, keep, source is not None) for g in candidate_counts(c_out, options.max_groups)}
    measured = costs.times(site.geometry, list(variants.values()))
    times = {g: measured[v] for g, v in variants.items()}
    if source is not None:
        times[1] = costs.credited_time(
            times[1], source[1], source[0].geometry if source[0] is not None else None, keep, c_in
        )
    return times, measured[site.geometry.dense]


def grid_times(sites: list[ConvSite], costs: Optional[CostTable], options: PlanOptions) -> dict[int, tuple[float, ...]]:
    """Each timed layer's measured seconds at ``G = 1`` for every ratio of the allowance grid
    (without the input gather where a source Conv computes only the kept channels), credited
    what a timed source among ``sites`` saves whole at that ratio, as :func:`candidate_times`
    credits it: the fastest ratio counts the source too (in int8 a ratio whose kept count is
    off the kernels' block size made the reader faster and its source slower)."""
    if costs is None:
        return {}
    geometries = {s.node_index: s.geometry for s in sites}
    found = {}
    for site in sites:
        if site.geometry is not None:
            c_in = site.weight.shape[1]
            keeps = [options.kept(c_in, r) for r in GRID]
            variants = [(1, keep, site.source is None) for keep in keeps]
            measured = costs.times(site.geometry, variants)
            source = geometries.get(site.source[0]) if site.source is not None else None
            whole = costs.times(source, [])[source.dense] if source is not None else 0.0
            found[site.node_index] = tuple(
                costs.credited_time(measured[v], whole, source, keep, c_in) for v, keep in zip(variants, keeps)
            )
    if found:
        costs.save()
    return found
