"""``apply(model, plan)``: the pruned model a plan describes, and nothing else.

``prune`` makes a plan and applies it; a plan kept from a report's JSON applies again to the
same model with the same bytes out (``python -m onnx_gkp IN OUT --apply REPORT.json``). The model is
analysed with the plan's own analysis options, so the plan's node indices name the same
Convs, and refused when it is not the model the plan was made for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import onnx

from ..analyse.sites import Analysis, ConvSite, analyse
from ..errors import GkpError
from ..io.model_file import ModelLike, digest, load_model
from ..plan.model import Pairs, Plan
from ..plan.trims import decide_trims
from .conv import Rewritten, rewrite


def sites_of(plan: Plan, sites: Sequence[ConvSite]) -> Pairs:
    """Each planned layer's site (with its refitted weights, where it has some) and plan."""
    by_index = {s.node_index: s for s in sites}
    missing = [layer.node_index for layer in plan.layers if layer.node_index not in by_index] + [
        i for i in plan.whole if i not in by_index
    ]
    if missing:
        raise GkpError(f"the plan names node {missing[0]}, which is not a prunable Conv of this model")
    pairs = []
    for layer in plan.layers:
        site = by_index[layer.node_index]
        if layer.weight is not None:
            if layer.weight.shape != site.weight.shape:
                raise GkpError(
                    f"the plan's weight for node {layer.node_index} has shape {list(layer.weight.shape)}, "
                    f"the model's {list(site.weight.shape)}"
                )
            site = replace(site, weight=layer.weight, bias=layer.bias)
        pairs.append((site, layer.plan))
    return pairs


def rewritten(
    model: onnx.ModelProto,
    analysis: Analysis,
    plan: Plan,
    sites: Sequence[ConvSite],
    pairs: Pairs,
    probes: Sequence[str] = (),
) -> Rewritten:
    """The rewrite of ``plan`` (its layers' sites and plans: ``pairs``, from :func:`sites_of`) on
    ``model`` whose prunable Convs are ``sites``; Convs outside the sites that a site reads
    (``Analysis.sources``) are trimmed like whole ones. The plan's trims must be the ones its
    layers imply (``trims.decide_trims``), or nothing is rewritten."""
    by_index = {s.node_index: s for s in sites}
    whole = [by_index[i] for i in plan.whole] + analysis.sources
    convs, plans = [s for s, _ in pairs], [p for _, p in pairs]
    if decide_trims(model, convs, plans, whole) != plan.trims:  # a plan edited by hand, or for another graph
        raise GkpError("the plan's trims are not the ones its layers imply on this model")
    return rewrite(model, convs, plans, probes, whole=whole, trims=plan.trims)


def apply(model: ModelLike, plan: Plan) -> onnx.ModelProto:
    """The pruned model ``plan`` describes (``model`` is a ModelProto or a path; never modified)."""
    original = load_model(model)
    if digest(original) != plan.model:
        raise GkpError("the plan was made for another model (its digest differs)")
    a = plan.analysis
    analysis = analyse(original, a.get("include"), a.get("exclude"), a.get("test_shapes"), a.get("min_in_channels", 4))
    return rewritten(original, analysis, plan, analysis.sites, sites_of(plan, analysis.sites)).model
