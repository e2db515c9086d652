"""Per-layer ratios from an error allowance: fixed and estimated without data, searched against
the held-out fidelity with it (``--keep``, ``bisection.py``), measured on what ships.

Each layer's curve (``curves.py``) is its error at every ratio of the grid; an allowance gives
each layer the fastest ratio within it. Without data the curves are estimated and the allowance is
the conservative ``DATA_FREE_ALLOWANCE``; with data they are measured on the fit samples and the
allowance is the largest whose refitted model keeps the target on the held-out samples.
"""

from __future__ import annotations

from dataclasses import replace

from ..check.metrics import model_estimate, model_score
from ..context import Context
from ..plan.proposal import Proposal
from .bisection import refined_search
from .curves import levels, measured_curves, ratios_within
from .uniform import Ratios, at_ratios, grid_times, plan_sites


def kept(context: Context) -> Proposal:
    """With data and no mode: the most pruning measured to keep ``--keep`` on the held-out samples."""
    ratios, trail = kept_ratios(context)
    return replace(at_ratios(context, ratios), trail=trail)


def kept_ratios(context: Context) -> tuple[Ratios, list[tuple[float, float]]]:
    """The ratios of the largest allowance measured to keep ``--keep`` on the held-out samples
    (every layer whole if none does), and every ``(allowance, score)`` measured."""
    sites, clock = context.sites, context.clock
    with clock("curves"):
        curves = measured_curves(context.full(), sites, context.plan_options, context.fit, context.options.threads)  # type: ignore[arg-type]
    with clock("measure"):
        times = grid_times(sites, context.costs, context.plan_options)
    tried: dict[tuple, tuple[float, float]] = {}

    def score(allowance: float) -> tuple[float, float]:  # what --keep states, and a smoother estimate of it
        ratios = ratios_within(curves, allowance, times)
        key = tuple(sorted(ratios.items()))
        if key not in tried:
            pairs, whole, skipped = plan_sites(context, ratios)
            pruned, _ = context.assemble(
                context.plan(context.refitted(pairs), whole), context.skipped + skipped, check=False
            )
            pruned = pruned if context.int8 is None else context.int8.shipped(pruned)
            figures = context.fidelity(pruned)
            tried[key] = (model_score(figures) or 0.0, model_estimate(figures) or 0.0)
        return tried[key]

    with clock("search"):
        found, trail = refined_search(levels(curves), score, context.keep)  # type: ignore[arg-type]
    return (ratios_within(curves, found, times) if found is not None else {s.node_index: 0.0 for s in sites}), trail
