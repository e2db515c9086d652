"""The data-free refit: each kept output's bias takes in the mean its pruned kernels added,
from the input means BatchNormalization recorded (``layer/compensation.py`` has the math)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..analyse.bn_stats import ChannelStats
from ..analyse.sites import ConvSite
from ..layer.compensation import bias_delta, tap_coverage
from ..layer.planner import LayerPlan


def compensated(site: ConvSite, plan: LayerPlan) -> LayerPlan:
    """The plan with its data-free ``bias_delta``, where the site's input means are known.

    Without a known input shape the border correction is left out (every tap counts fully).
    """
    if not isinstance(site.input_stats, ChannelStats):
        return plan
    kernel = site.weight.shape[2:]
    if site.geometry is None:
        coverage = np.ones(kernel)
    else:
        attrs = dict(site.geometry.attributes)
        coverage = tap_coverage(
            site.geometry.input_shape[2:],
            kernel,
            attrs.get("strides"),
            attrs.get("dilations"),
            attrs.get("pads"),
            str(attrs.get("auto_pad", "NOTSET")),
        )
    delta = bias_delta(site.weight, plan.keep_mask(site.weight.shape[1]), site.input_stats.mean, coverage)
    return replace(plan, bias_delta=tuple(float(d) for d in delta))
