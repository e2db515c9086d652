"""``--target-macs`` and ``--target-latency``: every layer's (kept count, G) or whole, chosen
jointly to meet the budget where the estimated quality cost is least (``layer_options.py``, ``knapsack.py``).

MACs: the allocation is exact, but a ``G = 1`` layer also lets its source stop computing the
channels it drops, which the per-layer options do not see; the budget is loosened by bisection,
keeping the loosest that still meets the target, until the assembled model is within
``MACS_TOLERANCE`` of it (``MACS_STEPS`` at most). Latency: the per-layer times do not add up
exactly end to end, so the saving asked of them is searched against measured end-to-end ratios
(:func:`search_saving`); the value found is kept in the cost table, so a rerun gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import onnx
from tqdm import tqdm

from ..analyse.bn_stats import StatsReader
from ..analyse.gains import ErrorGains
from ..analyse.graph import constant_tensors
from ..analyse.sites import ConvSite, Skip
from ..context import Context
from ..errors import GkpError
from ..layer.planner import LayerPlan, kernel_energy, plan_for_count
from ..layer.quality import relative_error, weighted_energy
from ..limits import MAX_LAYER_RATIO
from ..options import Target
from ..plan.model import Pairs
from ..plan.proposal import Proposal
from ..refit.activations import input_moments, output_errors
from ..report.report import Report
from ..runtime.sessions import random_inputs
from .knapsack import Infeasible, Option, allocate
from .layer_options import alternatives, layer_options, second_moment

MACS_TOLERANCE = 0.005  # of the model's Conv MACs: how far past a MACs target the result may go
MACS_STEPS = 12
LATENCY_TOLERANCE = 0.03  # relative: a measured latency this close to the target is accepted
LATENCY_ATTEMPTS = 6
SENSITIVITY_RATIO = 0.25  # each layer's measured sensitivity: a quarter of its inputs pruned, G = 1


@dataclass
class Choice:
    """One allocation realised: the planned layers, those left whole, their skips and records."""

    pairs: Pairs
    whole: list[ConvSite]
    left: list[Skip]
    records: dict[int, dict]


@dataclass
class Budget:
    """The per-layer options of a target, and the plans of the options chosen so far."""

    context: Context
    target: Target
    sites: list[ConvSite]
    tables: list[list[Option]]
    paths: list[tuple[float, str]]
    plans: dict[tuple[int, int, int], LayerPlan] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return "seconds" if self.target.kind == "latency" else "MACs"

    def realise(self, limit: float) -> Choice:
        """The allocation within ``limit`` (MACs or seconds), each chosen option planned in full."""
        try:
            chosen = allocate(self.tables, limit)
        except Infeasible as error:
            raise GkpError(
                f"the target cannot be met: {error} {self.unit}; no layer loses more than "
                f"{MAX_LAYER_RATIO:.0%} of its input channels"
            ) from None
        result = Choice([], [], [], {})
        for site, table, j, (gain, path) in zip(self.sites, self.tables, chosen, self.paths):
            option = table[j]
            if j == 0:
                result.whole.append(site)
                result.left.append(_left_whole(site, table))
                continue
            key = (site.node_index, option.groups, option.keep)
            if key not in self.plans:
                with self.context.clock("plan"):
                    self.plans[key] = plan_for_count(
                        site.weight, kernel_energy(site.weight), option.groups, option.keep, self.context.plan_options
                    )
            timing = (
                {"times": {option.groups: option.cost}, "dense_time": table[0].cost}
                if self.target.kind == "latency"
                else {}
            )
            result.pairs.append((site, replace(self.plans[key], **timing)))
            result.records[site.node_index] = {
                "estimated_quality_cost": round(option.quality, 6),
                self.unit: round(option.cost, 9),
                "whole": round(table[0].cost, 9),
                "error_gain": round(gain, 6),
                "gain_path": path,
                "alternatives [keep, G, quality cost, " + self.unit + "]": alternatives(table[1:]),
            }
        return result


def _left_whole(site: ConvSite, table: list[Option]) -> Skip:
    cheapest = min(table[1:], key=lambda o: o.quality, default=None)
    note = (
        ""
        if cheapest is None
        else (
            f" (least costly cut: keep {cheapest.keep}/{site.weight.shape[1]} "
            f"with G={cheapest.groups}, quality cost {cheapest.quality:.3g})"
        )
    )
    return Skip(site.node_index, site.node, "Conv", "left whole by the budget" + note, site.macs)


def to_target(context: Context) -> Proposal:
    """Every layer's (kept count, G) or whole, chosen jointly to meet the options' target; layers
    whose shape is unknown are left whole. A latency target is measured end to end as it is
    searched, so the guard has nothing left to check."""
    target = context.options.target
    kind = target.kind  # type: ignore[union-attr]
    unknown = [s for s in context.sites if (s.geometry if kind == "latency" else s.macs) is None]
    if kind == "macs" and (unknown or any(s.macs is None for s in context.skipped if s.op_type == "Conv")):
        raise GkpError("--target-macs needs every Conv's output shape; give --test-shape for the dynamic inputs")
    unmeasured = [
        Skip(
            s.node_index,
            s.node,
            "Conv",
            "left whole: its input shape is unknown, so its time cannot be measured",
            s.macs,
        )
        for s in unknown
    ]
    budget = _budget(context, target, [s for s in context.sites if s not in unknown], context.options.progress)  # type: ignore[arg-type]
    skipped = context.skipped + unmeasured
    choice, decisions = (_macs_choice(budget, skipped), {}) if kind == "macs" else _latency_choice(budget, skipped)
    return Proposal(
        choice.pairs, choice.whole + unknown, unmeasured + choice.left, decisions, choice.records, guard=False
    )


def _budget(context: Context, target: Target, sites: list[ConvSite], progress: bool) -> Budget:
    """Each layer's options, with error gains measured on the fit samples where there are some."""
    full, fit, clock, threads = context.full(), context.fit, context.clock, context.options.threads
    consts, _ = constant_tensors(full)
    gains = ErrorGains(full, consts, StatsReader(full, consts))
    with clock("calibrate"):
        measured = {} if fit is None else input_moments(full, sites, fit, threads=threads)
        sensitivity = {} if fit is None else measured_gains(context, full, sites, measured)
    tables, paths = [], []
    whole_times: dict[int, float] = {}  # the sources' whole times; an outside source is not timed
    geometries = {s.node_index: s.geometry for s in sites}
    for site in tqdm(sites, desc="options", unit="Conv", disable=not progress):
        gain, path = sensitivity.get(site.node_index) or gains(site.node_index)
        moments = measured.get(site.node_index, second_moment(site))
        source = None if site.source is None or target.kind != "latency" else whole_times.get(site.source[0], 0.0)
        geometry = geometries.get(site.source[0]) if site.source is not None else None
        with clock("measure" if target.kind == "latency" else "plan"):
            tables.append(
                layer_options(site, context.plan_options, target.kind, gain, moments, context.costs, source, geometry)
            )
        if target.kind == "latency":
            whole_times[site.node_index] = tables[-1][0].cost
        paths.append((gain, path))
    if context.costs is not None:
        context.costs.save()
    return Budget(context, target, sites, tables, paths)


def _assembled(budget: Budget, choice: Choice, skipped: list[Skip]) -> tuple[onnx.ModelProto, Report]:
    context = budget.context
    return context.assemble(context.plan(choice.pairs, choice.whole), skipped + choice.left, check=False)


def _macs_choice(budget: Budget, skipped: list[Skip]) -> Choice:
    """The loosest budget whose assembled model still removes the target's MACs (bisected)."""
    whole_cost = sum(t[0].cost for t in budget.tables)
    least = sum(min(o.cost for o in t) for t in budget.tables)  # the most pruning possible keeps this
    total = sum(s.macs for s in budget.sites) + sum(s.macs for s in skipped if s.op_type == "Conv")
    most = (whole_cost - least) / total
    fraction = budget.target.fraction
    if fraction > most:
        raise GkpError(
            f"--target-macs {fraction:g} cannot be met: at most {most:.1%} of this model's Conv MACs "
            f"can be removed (no layer loses more than {MAX_LAYER_RATIO:.0%} of its input channels)"
        )
    goal = fraction * total

    def removed(choice: Choice) -> float:  # from the plan alone: no rewrite
        context = budget.context
        return total - context.macs_after(context.plan(choice.pairs, choice.whole), skipped + choice.left)  # type: ignore[operator]

    # The budget itself always meets the goal (trimming only removes more); bisect towards
    # the loosest budget that still does.
    low, high = whole_cost - goal, whole_cost
    chosen = budget.realise(low)
    excess = removed(chosen) - goal
    for _ in range(MACS_STEPS):
        if excess <= MACS_TOLERANCE * total:
            break
        middle = budget.realise((low + high) / 2)
        more = removed(middle) - goal
        if more >= 0:
            low, chosen, excess = (low + high) / 2, middle, more
        else:
            high = (low + high) / 2
    return chosen


def _latency_choice(budget: Budget, skipped: list[Skip]) -> tuple[Choice, dict[str, float]]:
    """The allocation whose measured end-to-end time is closest to the target (``search_saving``),
    and the decision that chose it."""
    context = budget.context
    whole_cost = sum(t[0].cost for t in budget.tables)
    least = sum(min(o.cost for o in t) for t in budget.tables)
    full = context.full()
    feeds = random_inputs(context.original, context.analysis.input_shapes, context.options.seed)
    runs = max(context.options.latency_runs, 10)
    decision = f"budget | {context.fingerprint}"
    recalled = context.costs.recall(decision)  # type: ignore[union-attr]  # the predicted saving chosen last time, in seconds

    def measure(need: float) -> float:
        return context.time_ratio(_assembled(budget, budget.realise(whole_cost - need), skipped)[0], full, feeds, runs)

    need = recalled if recalled is not None else search_saving(budget.target.fraction, whole_cost - least, measure)
    choice = budget.realise(whole_cost - need)
    context.costs.remember(decision, need)  # type: ignore[union-attr]
    context.costs.save()  # type: ignore[union-attr]
    return choice, {"latency_saving_s": need}


def measured_gains(
    context: Context, full: onnx.ModelProto, sites: list[ConvSite], moments: dict[int, np.ndarray]
) -> dict[int, tuple[float, str]]:
    """Error gains measured on calibration inputs: each layer pruned alone (``G = 1``, a quarter
    of its inputs), the model's relative output error over the layer's estimated relative error."""
    options = context.plan_options
    plans = [
        plan_for_count(
            s.weight, kernel_energy(s.weight), 1, options.kept(s.weight.shape[1], SENSITIVITY_RATIO), options
        )
        for s in sites
    ]
    errors = output_errors(full, sites, plans, context.fit, threads=context.options.threads)  # type: ignore[arg-type]
    found = {}
    for site, plan, error in zip(sites, plans, errors):
        estimate = relative_error(
            weighted_energy(kernel_energy(site.weight), moments.get(site.node_index)),
            plan.keep_mask(site.weight.shape[1]),
        )
        found[site.node_index] = (
            error / max(estimate, 1e-12),
            f"measured: relative output error {error:.3g} with {SENSITIVITY_RATIO:.0%} of its inputs pruned",
        )
    return found


def search_saving(fraction: float, most: float, measure: Callable[[float], float]) -> float:
    """The predicted saving (seconds, from the layer times) whose allocation measures closest to
    ``fraction`` of the original's time end to end; ``measure(need)`` gives that ratio.

    Layer times measured one at a time predict the end-to-end saving only roughly (layout
    conversions, gathers, trimmed sources), so the saving asked for is searched: the most
    pruning first (if even that misses the target, :class:`GkpError` says by how much: on
    MobileNetV2 it kept 40% of the Conv MACs for 1.13x, at KL 2.9), then a linear guess,
    then bisection between what measured too slow and too fast; ``LATENCY_ATTEMPTS``
    measurements at most. The answer is the first within ``LATENCY_TOLERANCE`` of the target,
    else the slowest that meets it.
    """
    tried = {most: measure(most)}
    if tried[most] > fraction * (1 + LATENCY_TOLERANCE):  # shipping it would cost the most accuracy for a miss
        raise GkpError(
            f"--target-latency {fraction:g} cannot be met here: the most pruning the layer times allow "
            f"measured {tried[most]:.2f} of the original's time end to end"
        )
    low, high = 0.0, most
    need = most * min(1.0, (1.0 - fraction) / max(1.0 - tried[most], 1e-9))
    for _ in range(LATENCY_ATTEMPTS - 1):
        ratio = tried[need] = measure(need)
        if abs(ratio / fraction - 1.0) <= LATENCY_TOLERANCE:
            return need
        low, high = (need, high) if ratio > fraction else (low, need)
        need = (low + high) / 2
    meeting = [n for n, r in tried.items() if r <= fraction * (1 + LATENCY_TOLERANCE)]
    return max(meeting, key=lambda n: tried[n])
