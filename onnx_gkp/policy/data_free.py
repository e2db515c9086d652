"""Without data: per-layer ratios within a conservative estimated-error allowance."""

from __future__ import annotations

from ..context import Context
from ..plan.proposal import Proposal
from .curves import estimated_curves, ratios_within
from .uniform import Ratios, at_ratios, grid_times

DATA_FREE_ALLOWANCE = 1e-5  # without data: only what the estimate calls nearly exact (it ran up to 80x low)


def data_free(context: Context) -> Proposal:
    """Without data and a mode: each layer at the fastest ratio the estimate calls nearly exact."""
    return at_ratios(context, data_free_ratios(context))


def data_free_ratios(context: Context) -> Ratios:
    """The ratios the conservative estimated-error allowance admits."""
    sites, options = context.sites, context.plan_options
    with context.clock("curves"):
        curves = estimated_curves(context.full(), sites, options)
        with context.clock("measure"):  # only the layers the allowance lets prune at all
            times = grid_times(
                [s for s in sites if curves[s.node_index][0] <= DATA_FREE_ALLOWANCE], context.costs, options
            )
    return ratios_within(curves, DATA_FREE_ALLOWANCE, times)
