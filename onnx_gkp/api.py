"""The pipeline in one place: load -> analyse -> plan (a policy) -> apply -> check -> report."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Optional

import onnx

from .context import Context
from .cost.table import default_cache_path
from .io.model_file import ModelLike
from .io.paths import check_prune_paths
from .options import Mode, Options
from .plan.proposal import Proposal
from .policy.budget import to_target
from .policy.data_free import data_free
from .policy.fidelity_target import kept
from .policy.given import given
from .policy.guard import guarded
from .policy.uniform import at_ratios
from .report.report import Report

POLICIES: dict[Mode, Callable[[Context], Proposal]] = {
    "plan": given,
    "target": to_target,
    "uniform": at_ratios,
    "keep": kept,
    "data-free": data_free,
}


def prune(model: ModelLike, options: Optional[Options] = None, **overrides: Any) -> tuple[onnx.ModelProto, Report]:
    """Prune every eligible Conv of ``model`` (a ModelProto or a path; never modified) as
    ``options`` (:class:`~onnx_gkp.options.Options`, or its fields as keywords) ask; returns the
    pruned model and its :class:`Report`, whose ``plan`` :func:`~onnx_gkp.rewrite.model.apply` redoes.

    The mode (:meth:`Options.mode`) picks the policy (``policy/``): a ``ratio`` for every layer;
    a ``target_macs`` or ``target_latency`` budget spent where the estimated quality cost is
    least; with ``calibration`` data and neither, the most pruning measured to ``keep`` the
    fidelity on held-out samples; without data, what a conservative estimated-error allowance
    admits; or a given ``plan``, as it is. Layers are refitted on the fit samples (or their
    biases compensated without data), guarded so none is made slower, and with ``check`` the
    result is validated against its masked reference (:class:`ValidationFailed` if they differ).
    With ``quantize`` the pruned model ships as onnxruntime's static INT8 and is measured so.
    Bad input raises :class:`GkpError`. How each step works: ``docs/method.md``.
    """
    options = Options.of(options, overrides)
    cache = check_prune_paths(
        model, options.calibration, options.cost_cache or default_cache_path()
    )  # inputs are never modified
    run = Context.open(model, options, cache)
    proposal = POLICIES[run.mode](run)
    if not proposal.as_given:
        proposal = replace(proposal, pairs=run.refitted(proposal.pairs))
    pruned, report = guarded(run, proposal)
    if run.int8 is not None:
        with run.clock("quantize"):
            pruned, report.quantization = run.shipped(pruned)
    if run.data is not None:
        with run.clock("fidelity"):
            report.fidelity = run.fidelity(pruned)
        report.samples = {**run.data.counts, "held_out_index": list(run.data.held_index)}
    report.search = [{"allowance": round(a, 9), "score": s} for a, s in proposal.trail]
    return pruned, report
