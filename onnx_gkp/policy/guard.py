"""Never slower end to end: the layer timings are taken one layer at a time, so the assembled
model is timed against what the user has without it (the original, or with INT8 the original
quantized alone); while it measures slower, the layers with the smallest measured gains are
left whole, at the gain levels of ``GAIN_GUARDS``. The level found is kept in the cost table,
so a rerun gives the same bytes.
"""

from __future__ import annotations

import math

import onnx

from ..analyse.sites import Skip
from ..context import Context
from ..layer.planner import LayerPlan
from ..plan.proposal import Proposal
from ..report.report import Report

GAIN_GUARDS = (0.0, 0.1, 0.2, 0.35, 0.5, float("inf"))  # the last prunes nothing: never slower


def guarded(context: Context, proposal: Proposal) -> tuple[onnx.ModelProto, Report]:
    """The final model and its report, applied, checked and reported in one place
    (:meth:`Context.assemble`, validated with ``--check``): ``proposal`` less the layers measured
    slower than their dense Conv alone, and, where the proposal asks for the guard, less those
    whose gain is below the level the model needed to come out faster end to end (their
    original sites come back)."""
    options, costs = context.options, context.costs
    originals = {s.node_index: s for s in context.sites}  # what a layer left whole keeps
    guards: tuple[float, ...] = (0.0,)
    searched = costs is not None and proposal.guard
    decision = f"end-to-end guard | {context.fingerprint}"
    if searched:
        recalled = costs.recall(decision)  # type: ignore[union-attr]
        if recalled is not None:
            guards = (recalled,)
        elif options.check and options.latency_runs > 0:
            guards = GAIN_GUARDS
    for guard in guards:
        decisions = dict(proposal.decisions)
        if searched:
            decisions["end_to_end_guard"] = guard if math.isfinite(guard) else "every layer left whole"
        kept = [(s, p) for s, p in proposal.pairs if _passes(p, guard)]
        dropped = [(s, p) for s, p in proposal.pairs if not _passes(p, guard)]
        plan = context.plan(kept, proposal.whole + [originals[s.node_index] for s, _ in dropped], decisions)
        left = [Skip(s.node_index, s.node, "Conv", _reason(p, guard), s.macs) for s, p in dropped]
        skipped = context.skipped + proposal.skipped + left
        pruned, report = context.assemble(plan, skipped, options.check, proposal.records)
        if not _slower(context, pruned, report):
            break
    if len(guards) > 1:
        costs.remember(decision, guard)  # type: ignore[union-attr]
        costs.save()  # type: ignore[union-attr]
    return pruned, report


def _gain(plan: LayerPlan) -> float:
    return 1.0 - plan.times[plan.groups] / plan.dense_time  # type: ignore[operator]


def _passes(plan: LayerPlan, guard: float) -> bool:
    """Kept at this guard level: untimed, or measured at least ``guard`` faster than dense."""
    return plan.dense_time is None or _gain(plan) >= guard


def _reason(plan: LayerPlan, guard: float) -> str:
    if guard == float("inf"):
        return (
            f"left whole: measured {_gain(plan):.0%} faster alone, but no selection of layers made this model "
            "faster end to end"
        )
    return (
        f"left whole: measured {_gain(plan):.0%} faster alone, below the {guard:.0%} gain this model "
        f"needed to come out faster end to end"
    )


def _slower(context: Context, pruned: onnx.ModelProto, report: Report) -> bool:
    """Whether the pruned model measured slower end to end than what the user has without it:
    the original, or with INT8 the original quantized alone (against the pruned one quantized)."""
    latency = report.validation.latency_ms if report.validation else {}
    if not latency or context.int8 is None:
        return bool(latency) and latency["pruned"] > latency["original"]
    return context.time_ratio(pruned, context.int8.alone, context.timing_feeds(), context.options.latency_runs) > 1.0
