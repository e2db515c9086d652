"""The pipeline in one place: load -> analyse -> plan (a policy) -> apply -> check -> report."""

from __future__ import annotations

from typing import Any, Optional

import onnx

from .analyse.sites import Skip
from .rewrite.model import sites_of
from .context import Context
from .cost.table import default_cache_path
from .io.model_file import ModelLike
from .options import Options
from .io.paths import check_prune_paths
from .report.report import Report
from .policy.budget import plan_to_target
from .policy.data_free import data_free_ratios
from .policy.fidelity_target import kept_ratios
from .policy.gathers import without_gathers
from .policy.guard import guarded
from .policy.uniform import plan_sites


def prune(model: ModelLike, options: Optional[Options] = None, **overrides: Any) -> tuple[onnx.ModelProto, Report]:
    """Prune every eligible Conv of ``model`` (a ModelProto or a path; never modified) as
    ``options`` (:class:`~onnx_gkp.options.Options`, or its fields as keywords) ask; returns the
    pruned model and its :class:`Report`, whose ``plan`` :func:`~onnx_gkp.apply_plan.apply` redoes.

    The policy (``search/``) follows the options: a ``ratio`` for every layer; a ``target_macs``
    or ``target_latency`` budget spent where the estimated quality cost is least; with
    ``calibration`` data and neither, the most pruning measured to ``keep`` the fidelity on
    held-out samples; without data, what a conservative estimated-error allowance admits; or a
    given ``plan``, as it is. Layers whose input Gather makes the model slower end to end are
    left whole (``search/gathers.py``). Layers are refitted on the fit samples (or their biases
    compensated without data), timed on this machine so none is made slower, and with
    ``check`` the result is validated against its masked reference (:class:`ValidationFailed`
    if they differ). With ``quantize`` the pruned model ships as onnxruntime's static INT8 and
    is measured so. Bad input raises :class:`GkpError`. How each step works: ``docs/method.md``.
    """
    options = Options.of(options, overrides)
    cache = check_prune_paths(model, options.calibration, options.cost_cache or default_cache_path())  # inputs are never modified
    context = Context.open(model, options, cache)
    skipped, trail, records = list(context.skipped), [], None
    target = options.target
    if options.plan is not None:
        pairs, whole = sites_of(options.plan, context.sites), [s for s in context.sites if s.node_index in options.plan.whole]
        skipped += [Skip(s.node_index, s.node, "Conv", "left whole by the plan", s.macs) for s in whole]
        records = {}  # applied as it is: no guard
    elif target is not None:
        pairs, whole, records = plan_to_target(context, target, skipped, options.progress)
    else:
        ratios = None
        if context.mode == "data-free":
            ratios = data_free_ratios(context)
        elif context.mode == "keep":
            ratios, trail = kept_ratios(context, skipped)
        pairs, whole = plan_sites(context, skipped, ratios, options.progress)
        pairs, whole = without_gathers(context, pairs, whole, skipped)
    pairs = pairs if options.plan is not None else context.refitted(pairs)
    pruned, report = guarded(context, pairs, whole, skipped, records)
    if context.int8 is not None:
        with context.clock("quantize"):
            pruned, report.quantization = context.shipped(pruned)
    if context.data is not None:
        with context.clock("fidelity"):
            report.fidelity = context.fidelity(pruned)
        report.samples = {**context.data.counts, "held_out_index": list(context.data.held_index)}
    report.search = [{"allowance": round(a, 9), "score": s} for a, s in trail]
    return pruned, report
