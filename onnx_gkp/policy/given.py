"""A plan given to apply (``--apply``, ``Options.applying``): taken as it is, weights and all."""

from __future__ import annotations

from ..analyse.sites import Skip
from ..context import Context
from ..plan.proposal import Proposal
from ..rewrite.model import sites_of


def given(context: Context) -> Proposal:
    """The given plan's layers, and the Convs it leaves whole; neither refitted nor guarded."""
    plan = context.options.plan
    whole = [s for s in context.sites if s.node_index in plan.whole]  # type: ignore[union-attr]
    left = [Skip(s.node_index, s.node, "Conv", "left whole by the plan", s.macs) for s in whole]
    return Proposal(sites_of(plan, context.sites), whole, left, as_given=True, guard=False)  # type: ignore[arg-type]
