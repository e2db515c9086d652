"""Per-layer error curves, and the per-layer ratios an error allowance buys.

A layer's *curve* is the model's relative output error ``sum ||y' - y||^2 / sum ||y||^2`` with
that layer alone pruned (``G = 1``) at each ratio of ``GRID``: measured on the fit samples when
there are some (``calibrate.output_errors``; the lesser of the masked layer's error and its
error refitted alone on other fit samples, as the pass will refit it), else estimated from the
weights (the pruned share of ``||W[f, c]||^2 E[x_c^2]``, times the error gain read off the
graph: ``quality.py``, ``gains.py``). Curves are made non-decreasing.

An *allowance* ``tau`` gives every layer a ratio whose error stays within ``tau``: a fragile
layer is cut less, a robust one more, with one number to search. Among the ratios within it,
the one measured fastest on this machine (``cost/table.py``; the largest where times tie within
``TIME_TIE``): onnxruntime's blocked Conv path wants channel counts in multiples of 8 or 16, so a
layer kept at 8 of 16 channels can run faster than one kept at 10. Plain numpy apart from the
measured curves' onnxruntime runs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx

from ..analyse.bn_stats import StatsReader
from ..analyse.gains import ErrorGains
from ..analyse.graph import constant_tensors
from ..analyse.sites import ConvSite
from ..layer.planner import PlanOptions, kernel_energy, plan_for_count
from ..layer.quality import relative_error, weighted_energy
from ..limits import MAX_LAYER_RATIO
from ..refit.activations import output_errors
from ..refit.reconstruct import refitted_alone
from .layer_options import second_moment

GRID = tuple(
    k / 8 for k in range(1, round(8 * MAX_LAYER_RATIO) + 1)
)  # ratios a layer may get: eighths, up to the limit
CURVE_SAMPLES = 16  # fit samples each point of a measured curve runs
REFIT_SAMPLES = 128  # other fit samples each layer of a measured curve is refitted on

TIME_TIE = 0.03  # relative: layer times this close count as equal, and the larger ratio wins

Curves = dict[int, tuple[float, ...]]  # node index -> error at each ratio of GRID
Times = dict[int, tuple[float, ...]]  # node index -> measured seconds at each ratio of GRID


def grid_plans(site: ConvSite, options: PlanOptions) -> list:
    """The layer's ``G = 1`` plan at each ratio of ``GRID`` (kept channels by weight energy)."""
    energy = kernel_energy(site.weight)
    return [plan_for_count(site.weight, energy, 1, options.kept(site.weight.shape[1], r), options) for r in GRID]


def _monotone(errors: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(e) for e in np.maximum.accumulate(np.asarray(errors, dtype=np.float64)))


def estimated_curves(model: onnx.ModelProto, sites: Sequence[ConvSite], options: PlanOptions) -> Curves:
    """Data-free curves: each layer's estimated relative error (weights and BN statistics) times
    its error gain read off ``model``'s graph."""
    consts, _ = constant_tensors(model)
    gains = ErrorGains(model, consts, StatsReader(model, consts))
    curves = {}
    for site in sites:
        weighted = weighted_energy(kernel_energy(site.weight), second_moment(site))
        c_in = site.weight.shape[1]
        gain = gains(site.node_index)[0]
        curves[site.node_index] = _monotone(
            [gain * relative_error(weighted, p.keep_mask(c_in)) for p in grid_plans(site, options)]
        )
    return curves


def measured_curves(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    options: PlanOptions,
    fit: dict[str, np.ndarray],
    threads: int,
    refit: bool = True,
) -> Curves:
    """Curves measured on the first ``CURVE_SAMPLES`` fit samples, each layer pruned alone: with
    ``refit``, each point the lesser of the masked layer's error and the error with the layer
    refitted (``calibrate.refitted_alone``) on up to ``REFIT_SAMPLES`` other fit samples, as the
    pass will refit it."""
    flat_sites = [s for s in sites for _ in GRID]
    flat_plans = [p for s in sites for p in grid_plans(s, options)]
    errors = output_errors(model, flat_sites, flat_plans, fit, threads=threads, samples=CURVE_SAMPLES)
    count = len(next(iter(fit.values())))
    if refit and count > 0:
        rest = (
            {k: v[CURVE_SAMPLES : CURVE_SAMPLES + REFIT_SAMPLES] for k, v in fit.items()}
            if count > CURVE_SAMPLES
            else fit
        )
        pairs = refitted_alone(model, flat_sites, flat_plans, rest, threads=threads)
        after = output_errors(
            model, [s for s, _ in pairs], [p for _, p in pairs], fit, threads=threads, samples=CURVE_SAMPLES
        )
        errors = [min(a, b) for a, b in zip(errors, after)]
    return {s.node_index: _monotone(errors[i * len(GRID) : (i + 1) * len(GRID)]) for i, s in enumerate(sites)}


def ratios_within(curves: Curves, tau: float, times: Optional[Times] = None) -> dict[int, float]:
    """Each layer's ratio of ``GRID`` whose error is at most ``tau`` (0: left whole): the fastest
    where ``times`` has the layer, else the largest."""
    chosen = {}
    for node, errors in curves.items():
        allowed = [i for i, e in enumerate(errors) if e <= tau]
        seconds = (times or {}).get(node)
        if allowed and seconds is not None:
            fastest = min(seconds[i] for i in allowed)
            allowed = [i for i in allowed if seconds[i] <= fastest * (1 + TIME_TIE)]
        chosen[node] = GRID[max(allowed)] if allowed else 0.0
    return chosen


def levels(curves: Curves) -> list[float]:
    """Every allowance that changes some layer's ratio, ascending."""
    return sorted({e for errors in curves.values() for e in errors})
