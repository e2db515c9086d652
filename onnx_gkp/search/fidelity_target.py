"""Per-layer ratios from the layers' error curves: an allowance fixed and estimated without
data; a price searched against the held-out fidelity with it (``--keep``, ``keep.py``), measured
on what ships.

Each layer's curve (``allowance.py``) is its error at every ratio of the grid. Without data the
curves are estimated and each layer gets the fastest ratio within the conservative
``DATA_FREE_ALLOWANCE``. With data they are measured on the fit samples, each layer gets the ratio
that minimises its error plus a price times its measured seconds, and the price is the highest
whose refitted model keeps the target on the held-out samples.
"""

from __future__ import annotations

from ..allowance import estimated_curves, measured_curves, priced_ratios, prices, ratios_within
from ..analyse import Skip
from ..context import Context
from ..fidelity import model_estimate, model_score
from ..keep import search
from .uniform import grid_times, plan_sites

DATA_FREE_ALLOWANCE = 1e-5  # without data: only what the estimate calls nearly exact (it ran up to 80x low)

Ratios = dict[int, float]


def data_free_ratios(context: Context) -> Ratios:
    """The ratios the conservative estimated-error allowance admits."""
    sites, options = context.sites, context.plan_options
    with context.clock("curves"):
        curves = estimated_curves(context.full(), sites, options)
        with context.clock("measure"):  # only the layers the allowance lets prune at all
            times, _ = grid_times([s for s in sites if curves[s.node_index][0] <= DATA_FREE_ALLOWANCE], context.costs, options)
    return ratios_within(curves, DATA_FREE_ALLOWANCE, times)


def kept_ratios(context: Context, skipped: list[Skip]) -> tuple[Ratios, list[tuple[float, float]]]:
    """The ratios of the highest price measured to keep ``--keep`` on the held-out samples
    (every layer whole if none does), and every ``(price, score)`` measured."""
    sites, clock = context.sites, context.clock
    with clock("curves"):
        curves = measured_curves(context.full(), sites, context.plan_options, context.fit, context.options.threads)  # type: ignore[arg-type]
    with clock("measure"):
        times, whole = grid_times(sites, context.costs, context.plan_options)
    tried: dict[tuple, tuple[float, float]] = {}

    def score(price: float) -> tuple[float, float]:  # what --keep states, and a smoother estimate of it
        ratios = priced_ratios(curves, price, times, whole)
        key = tuple(sorted(ratios.items()))
        if key not in tried:
            pairs, left = plan_sites(context, list(skipped), ratios)
            pruned, _ = context.assemble(context.plan(context.refitted(pairs), left), list(skipped), check=False)
            pruned = pruned if context.int8 is None else context.int8.shipped(pruned)
            figures = context.fidelity(pruned)
            tried[key] = (model_score(figures) or 0.0, model_estimate(figures) or 0.0)
        return tried[key]

    with clock("search"):
        found, trail = search(prices(curves, times, whole), score, context.keep)  # type: ignore[arg-type]
    return (priced_ratios(curves, found, times, whole) if found is not None else {s.node_index: 0.0 for s in sites}), trail
