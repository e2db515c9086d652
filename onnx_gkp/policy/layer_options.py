"""Budgets users think in (``--target-macs``, ``--target-latency``) turned into per-layer options.

Each prunable layer offers "whole" plus every (kept count, ``G``) on a grid: kept counts for
ratios ``1/steps, 2/steps, ...`` up to ``MAX_LAYER_RATIO``, counts up to ``--max-groups``. An
option's quality cost is the layer's estimated relative error times its error gain
(``quality.py``, ``gains.py``), with ``--group-cost`` pricing each doubling of ``G`` as
in the uniform mode. Its resource is the Conv MACs it keeps, or its measured seconds on this
machine's onnxruntime (``cost/table.py``); for a latency budget only the counts the uniform mode
would consider compete (measured faster than the dense Conv, and within ``--speed-slack`` of
the fastest at that kept count). ``knapsack.allocate`` picks one option per layer.

Estimates use the balanced clustering and kernel scores of each ``G`` for every kept count at
once (no retention refinement, which depends on the kept count); the chosen option is then
planned in full (``planner.plan_for_count``), so the plan can only be better than its estimate.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..analyse.geometry import ConvGeometry
from ..analyse.sites import ConvSite
from ..cost.table import CostTable, as_written
from ..layer.cluster import balanced_kmeans
from ..layer.group_count import candidate_counts, fast_counts
from ..layer.planner import PlanOptions, filter_features, group_scores, kernel_energy
from ..layer.quality import relative_errors, weighted_energy
from ..limits import MAX_LAYER_RATIO
from .knapsack import Option

STEPS = {"macs": 16, "latency": 8}  # the latency grid is coarser: every option is timed


def keep_grid(c_in: int, steps: int, options: PlanOptions) -> list[int]:
    """Kept counts for ratios ``k / steps`` up to ``MAX_LAYER_RATIO``, without the whole layer."""
    ratios = [k / steps for k in range(1, int(MAX_LAYER_RATIO * steps) + 1)]
    return sorted({options.kept(c_in, r) for r in ratios} - {c_in})


def second_moment(site: ConvSite) -> Optional[np.ndarray]:
    """``E[x_c^2]`` of the input channels where BN statistics give mean and spread, else None."""
    stats = site.input_stats
    if isinstance(stats, str) or stats.var is None:
        return None
    return stats.mean**2 + stats.var


def layer_options(
    site: ConvSite,
    options: PlanOptions,
    kind: str,
    gain: float,
    moments: Optional[np.ndarray],
    costs: Optional[CostTable] = None,
    source_time: Optional[float] = None,
    source_geometry: Optional[ConvGeometry] = None,
) -> list[Option]:
    """Whole first, then every (kept count, ``G``) with its quality cost and resource.

    ``kind == "latency"`` needs ``costs`` and the site's geometry; MACs need ``site.macs``.
    ``source_time``: the site reads a source Conv that ``G = 1`` trims (its whole time; 0 where
    it is not timed): that variant is timed without the input gather, as the rewrite writes it,
    and credited the source's time in proportion to the channels it stops computing, or what
    ``source_geometry`` timed with fewer filters saves where that is less (``costs.credited``,
    as ``search/uniform.candidate_times`` does). Without it, MobileNetV2's projections were timed
    with a gather their rewrite does not have, and a latency budget spent itself on the expand
    Convs that read the residual stream (40% of the MACs kept for 1.13x).
    """
    weight = site.weight
    c_out, c_in = weight.shape[:2]
    keeps = keep_grid(c_in, STEPS[kind], options)
    counts = candidate_counts(c_out, options.max_groups)
    allowed = {m: counts for m in keeps}
    if kind == "latency":
        assert costs is not None and site.geometry is not None
        trimmed = source_time is not None
        times = costs.times(site.geometry, [as_written(g, m, trimmed) for g in counts for m in keeps])
        resource = lambda g, m: (  # noqa: E731
            costs.credited_time(times[as_written(g, m, trimmed)], source_time or 0.0, source_geometry, m, c_in)  # noqa: E731
            if g == 1
            else times[as_written(g, m, trimmed)]
        )
        whole = times[site.geometry.dense]
        # As in the uniform mode: only counts measured faster than dense, and near the fastest.
        allowed = {m: fast_counts({g: resource(g, m) for g in counts}, whole, options.speed_slack) for m in keeps}
    else:
        resource = lambda g, m: site.macs * m / c_in  # noqa: E731
        whole = float(site.macs)
    energy = kernel_energy(weight)
    weighted = weighted_energy(energy, moments)
    found = [Option(c_in, 1, 0.0, whole)]
    for g in sorted({g for counts_at in allowed.values() for g in counts_at}):
        clusters = balanced_kmeans(filter_features(energy), g, seed=options.seed)
        errors = relative_errors(weighted, clusters, group_scores(weight, clusters, options), keeps)
        price = gain * (1.0 + options.group_cost * math.log2(g))
        found += [
            Option(m, g, float(e) * price, float(resource(g, m))) for m, e in zip(keeps, errors) if g in allowed[m]
        ]
    return found


def alternatives(options: Sequence[Option]) -> list[list[float]]:
    """The best ``G`` of every kept count, ``[keep, G, quality, resource]``: what a choice beat."""
    best: dict[int, Option] = {}
    for option in options:
        if option.keep not in best or option.quality < best[option.keep].quality:
            best[option.keep] = option
    return [[o.keep, o.groups, round(o.quality, 6), round(o.cost, 9)] for _, o in sorted(best.items())]
