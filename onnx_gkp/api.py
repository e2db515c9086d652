"""The pipeline in one place: load -> analyse -> plan -> rewrite -> check -> validate -> report."""

from __future__ import annotations

from typing import Optional

import onnx
from tqdm import tqdm

from .analyse import Analysis, ConvSite, Skip, analyse, count_params
from .errors import GkpError, ValidationFailed
from .load import ModelLike, first_line, load_model
from .plan import Groups, PlanOptions, plan_layer
from .reference import masked_reference
from .report import LayerReport, Report, totals
from .rewrite import rewrite
from .validate import validate


def prune(
    model: ModelLike,
    *,
    ratio: float = 0.25,
    groups: Groups = "auto",
    criterion: str = "combined",
    max_groups: int = 16,
    group_cost: float = 0.05,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    min_in_channels: int = 4,
    test_shapes: Optional[dict[str, tuple[int, ...]]] = None,
    seed: int = 0,
    check: bool = True,
    latency_runs: int = 20,
    progress: bool = False,
) -> tuple[onnx.ModelProto, Report]:
    """Prune every eligible Conv of ``model`` (a ModelProto or a path; never modified).

    Returns the pruned model and its :class:`Report`. With ``check`` (the default) the result
    is validated against the masked reference in onnxruntime and :class:`ValidationFailed`
    is raised if they disagree; bad input raises :class:`GkpError`.
    """
    try:
        options = PlanOptions(ratio, groups, criterion, max_groups, group_cost, seed)  # type: ignore[arg-type]
    except ValueError as error:
        raise GkpError(str(error)) from None
    original = load_model(model)
    analysis = analyse(original, include, exclude, test_shapes, min_in_channels)
    sites, skipped = _apply_plan_limits(analysis, options)
    plans = [plan_layer(s.weight, options) for s in tqdm(sites, desc="planning", unit="Conv", disable=not progress)]
    pruned, gathers = rewrite(original, sites, plans)
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ValidationFailed(f"the pruned model fails onnx.checker: {first_line(error)}") from None
    layers = [LayerReport.of(s, p) for s, p in zip(sites, plans)]
    report = Report(
        options={
            "ratio": ratio, "groups": groups, "criterion": criterion, "max_groups": max_groups,
            "group_cost": group_cost, "include": include, "exclude": exclude,
            "min_in_channels": min_in_channels, "seed": seed,
        },
        input_shapes={k: list(v) for k, v in analysis.input_shapes.items()},
        layers=layers,
        skipped=skipped,
        totals=totals(layers, skipped, count_params(original), count_params(pruned), gathers),
    )
    if check:
        masked = masked_reference(original, sites, plans)
        probes = [original.graph.node[s.node_index].output[0] for s in sites]
        report.validation = validate(
            pruned, masked, original, analysis.input_shapes, seed, latency_runs, probes=probes
        )
        if not report.validation.passed:
            raise ValidationFailed(
                f"the pruned model differs from its masked reference by {report.validation.masked_max_abs_diff:.3g} "
                f"(relative {report.validation.masked_max_rel_diff:.3g})",
                report,
            )
    return pruned, report


def _apply_plan_limits(analysis: Analysis, options: PlanOptions) -> tuple[list[ConvSite], list[Skip]]:
    """Move the sites the options cannot plan (G not dividing C_out, nothing to prune) to skips."""
    sites, skipped = [], list(analysis.skipped)
    for site in analysis.sites:
        reason = options.refusal(*site.weight.shape[:2])
        if reason is None:
            sites.append(site)
        else:
            skipped.append(Skip(site.node_index, site.node, "Conv", reason, site.macs))
    if options.groups != "auto" and analysis.sites and not sites:
        raise GkpError(f"--groups {options.groups} divides the output channels of no prunable Conv")
    return sites, sorted(skipped, key=lambda s: s.node_index)
