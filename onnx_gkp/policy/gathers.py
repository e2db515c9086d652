"""The layers whose rewrite keeps an input Gather, pruned or left whole as a set, measured end to end.

A pruned Conv whose source cannot be trimmed for it (a residual stream, read by an Add too)
reads its kept channels through a Gather, and a Gather breaks the layout onnxruntime runs a
chain of Convs in: in INT8 each costs two Transposes, and the per-layer timings (one layer
between two neighbours) do not see what it costs the chain. On the bundled model in INT8 at
the uniform half, the plan with its gathered layers left whole ran 1.19-1.23x over INT8 alone,
with them pruned 1.09-1.19x, side by side (docs/method.md). So the model is assembled with and without
those layers and both are timed side by side as they ship; the layers stay pruned only where
that measures ``GATHER_GAIN`` faster, since leaving them whole is always the more faithful. The
measured ratio is kept in the cost table, so a rerun gives the same bytes.
"""

from __future__ import annotations

from dataclasses import replace

from ..analyse.sites import Skip
from ..context import Context
from ..plan.proposal import Proposal
from ..plan.trims import keeps_gather

# the gathered layers must make the model this much faster to be pruned: short of it, whole is as fast and more faithful
GATHER_GAIN = 0.05
RUNS = 30  # at least: the two models differ by a few percent, and 20 interleaved runs flip such a difference

REASON = (
    "left whole: with the {} layers that need an input Gather (this one among them) pruned, the model took "
    "{:.2f} of its time without them, short of the {:.0%} a Gather must buy"
)


def without_gathers(context: Context, proposal: Proposal) -> Proposal:
    """``proposal`` less the layers that keep an input Gather, unless pruning them measures
    ``GATHER_GAIN`` faster end to end (then left whole, with the figure)."""
    costs, options = context.costs, context.options
    pairs, whole = proposal.pairs, proposal.whole
    trims = context.plan(pairs, whole).trims
    gathered = [s for s, _ in pairs if keeps_gather(s, trims)]
    if costs is None or not gathered or len(gathered) == len(pairs):  # all of them: the guard decides
        return proposal
    out = {s.node_index for s in gathered}
    kept = [(s, p) for s, p in pairs if s.node_index not in out]
    lighter = whole + gathered
    decision = f"input gathers | {context.fingerprint}"
    ratio = costs.recall(decision)  # time with the gathered layers pruned, over without
    if ratio is None:
        if not (options.check and options.latency_runs > 0):
            return proposal
        with context.clock("measure"):
            skipped = context.skipped + proposal.skipped
            models = [
                context.assemble(context.plan(p, w), skipped, check=False)[0]
                for p, w in ((pairs, whole), (kept, lighter))
            ]
            ratio = context.shipped_time_ratio(*models, max(options.latency_runs, RUNS))
        costs.remember(decision, ratio)
        costs.save()
    decisions = {
        **proposal.decisions,
        "input_gathers": {"layers": len(gathered), "time_with_over_without": round(ratio, 4)},
    }
    if ratio < 1.0 - GATHER_GAIN:
        return replace(proposal, decisions=decisions)
    left = [
        Skip(s.node_index, s.node, "Conv", REASON.format(len(gathered), ratio, GATHER_GAIN), s.macs) for s in gathered
    ]
    return replace(proposal, pairs=kept, whole=lighter, skipped=proposal.skipped + left, decisions=decisions)
