"""The pipeline in one place: load -> analyse -> plan -> rewrite -> check -> validate -> report."""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import onnx
from tqdm import tqdm

from .analyse import Analysis, ConvSite, Skip, analyse, constant_tensors, count_params
from .budget import Infeasible, Option, allocate
from .allowance import GRID, estimated_curves, levels, measured_curves, ratios_within
from .calibrate import input_moments, output_errors, outputs_on, reconstructed
from .compensation import bias_delta, tap_coverage
from .costs import CostTable, default_cache_path
from .paths import check_prune_paths
from .errors import GkpError, ValidationFailed
from .fidelity import TARGET_METRICS, fidelity, model_estimate, model_score
from .group_count import candidate_counts, none_fast_reason
from .input_stats import ChannelStats, StatsReader
from .load import ModelLike, check_onnx, digest, load_model, release, restored
from .plan import Groups, LayerPlan, PlanOptions, kept_count, kernel_energy, plan_for_count, plan_layer
from .propagation import ErrorGains
from .quantize import CHOICES as QUANTIZE, Int8, int8_original
from .quality import relative_error, weighted_energy
from .keep import search
from .reference import masked_reference, masked_stubs
from .report import LayerReport, Report, totals
from .rewrite import rewrite
from .runtime import batch_size, check_supported, median_latency_ms, random_inputs, weight_bytes
from .samples import Calibration, Preprocess, Samples, load_samples, split
from .targets import MAX_LAYER_RATIO, Target, alternatives, layer_options, second_moment
from .validate import PART_BYTES, WHOLE_LIMIT, validate


def prune(
    model: ModelLike,
    *,
    ratio: Optional[float] = None,
    groups: Groups = "auto",
    criterion: str = "combined",
    max_groups: int = 16,
    group_cost: float = 0.05,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    min_in_channels: int = 4,
    test_shapes: Optional[dict[str, tuple[int, ...]]] = None,
    seed: int = 0,
    runtime_aware: bool = True,
    speed_slack: float = 0.05,
    threads: int = 1,
    cost_cache: Optional[Path] = None,
    compensate: bool = True,
    calibration: Optional[Calibration] = None,
    preprocess: Optional[Preprocess] = None,
    keep: Optional[float] = None,
    metrics: Optional[dict[str, str]] = None,
    input_values: Optional[dict[str, float]] = None,
    target_macs: Optional[float] = None,
    target_latency: Optional[float] = None,
    quantize: Optional[str] = None,
    check: bool = True,
    latency_runs: int = 20,
    progress: bool = False,
) -> tuple[onnx.ModelProto, Report]:
    """Prune every eligible Conv of ``model`` (a ModelProto or a path; never modified).

    With ``groups="auto"`` and ``runtime_aware`` (the default), each layer's candidate counts
    are timed on this machine's onnxruntime with ``threads`` threads (cached in ``cost_cache``,
    default :func:`~onnx_gkp.costs.default_cache_path`): a layer is never rewritten into
    something slower than it was, and ``G`` is chosen for quality among the counts within
    ``speed_slack`` of the fastest.

    With ``compensate`` (the default), each pruned Conv whose input channel means can be read
    off the graph (BatchNormalization statistics, ``input_stats.py``) gets the expected
    contribution of its pruned kernels added to its bias (``compensation.py``); the report
    lists it per layer as ``bias_delta``, and the masked reference includes it.

    With ``calibration`` (a mapping of arrays named like the model's inputs, samples along the
    first axis, or a ``.npz``, ``.npy`` or folder of images read with ``preprocess``), a quarter
    of the samples is held out (``samples.py``): on the rest each pruned layer's kept channels
    are chosen and its weights and bias refitted to reproduce its original output, layer by
    layer (``calibrate.py``); on the held-out part the report measures the fidelity per output
    (``fidelity.py``, target metrics by output kind or ``metrics``). Without ``ratio`` or a
    target, ``keep`` (default 0.99 with data) is the fidelity to keep there: the most pruning
    measured to keep it is returned (``allowance.py``, ``keep.py``). Without data, ratio or
    target, only what a conservative estimated-error allowance admits is pruned.

    With ``target_macs`` (remove this fraction of the model's Conv MACs) or ``target_latency``
    (the pruned model should take this fraction of the original's onnxruntime time), ``ratio``
    is not used: every layer's kept count and ``G`` are chosen jointly, spending the budget
    where the estimated quality cost is least (``targets.py``, ``budget.py``); layers may be
    left whole. The report records each layer's choice, its estimated costs and the
    alternatives it beat, and the target met.

    With ``quantize`` (``"int8"``, or ``"u8s8"`` / ``"s8s8"`` to pin the activation and weight
    types), the pruned model is quantized with onnxruntime's static QDQ quantization on the fit
    samples, and what ships is measured: ``keep`` is checked on the quantized candidates, and
    the report compares them with the original quantized the same way (``quantize.py``).

    Returns the pruned model and its :class:`Report`. With ``check`` (the default) the result
    is validated against the masked reference in onnxruntime and :class:`ValidationFailed`
    is raised if they disagree; bad input raises :class:`GkpError`.
    """
    try:
        options = PlanOptions(DEFAULT_RATIO if ratio is None else ratio, groups, criterion, max_groups, group_cost, seed, speed_slack)  # type: ignore[arg-type]
    except ValueError as error:
        raise GkpError(str(error)) from None
    if not 1 <= threads <= MAX_THREADS:
        raise GkpError(f"threads must be between 1 and {MAX_THREADS} (4 per CPU core), got {threads}")
    if min_in_channels < 0:
        raise GkpError(f"min_in_channels must be >= 0, got {min_in_channels}")
    target = _target(target_macs, target_latency)
    cache = check_prune_paths(model, calibration, cost_cache or default_cache_path())  # inputs are never modified
    clock = Stopwatch()
    with clock("load"):
        original = load_model(model)
        check_supported(original)
    with clock("analyse"):
        analysis = analyse(original, include, exclude, test_shapes, min_in_channels)
        sites, skipped = _apply_plan_limits(analysis, options)
    data = None if calibration is None else split(load_samples(calibration, original, preprocess), seed)
    fit = None if data is None else data.fit
    mode = _mode(ratio, target, keep, data, metrics, original)
    keep = DEFAULT_KEEP if mode == "keep" and keep is None else keep
    if quantize is not None and (quantize not in QUANTIZE or data is None):
        raise GkpError(f"quantize is one of {', '.join(QUANTIZE)} and calibrates on real inputs: give calibration data"
                       if quantize in QUANTIZE else f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    timed = target.kind == "latency" if target is not None else runtime_aware and groups == "auto"
    table = CostTable(threads, cache) if timed or quantize == "int8" else None
    costs = table if timed else None
    options_record = {
        "ratio": ratio if mode == "uniform" else None, "mode": mode, "keep": keep, "groups": groups, "criterion": criterion,
        "max_groups": max_groups, "group_cost": group_cost, "include": include, "exclude": exclude,
        "min_in_channels": min_in_channels, "seed": seed, "runtime_aware": runtime_aware,
        "speed_slack": speed_slack, "threads": threads, "compensate": compensate,
        "calibration_samples": None if data is None else data.counts, "metrics": metrics or {},
        "target_macs": target_macs, "target_latency": target_latency, "quantize": quantize,
    }
    fingerprint = f"{digest(original)} | {options_record} | {test_shapes}" if costs is not None else ""
    # The sites hold their weights as arrays: the model need not hold them too (restored to run).
    arrays = {original.graph.node[s.node_index].input[1]: s.weight for s in sites}
    full, original = original, release(original, arrays)
    refit = None if fit is None else f"weights and bias refitted on {len(next(iter(fit.values())))} calibration samples"
    int8 = None
    if quantize is not None:
        with clock("quantize"):
            int8 = int8_original(quantize, full, fit, _timing_feeds(data, analysis), table, threads, latency_runs)
        if costs is not None:
            costs.precision = int8.types  # layers are timed as they will run
    build = dict(original=original, analysis=analysis, check=check, latency_runs=latency_runs, seed=seed,
                 threads=threads, clock=clock, refit=refit, arrays=arrays,
                 feeds=_feeds(original, analysis, data, input_values, seed), real=data is not None)
    budget: dict[int, dict] = {}
    ratios, trail = None, []
    if target is None:
        if mode != "uniform":
            ratios, trail = _allowed_ratios(keep, full, sites, options, costs, data, skipped, (metrics, int8), compensate, build)
        pairs, whole = _plan_sites(sites, options, costs, skipped, clock, progress, ratios, _outside(analysis))
    else:
        pairs, whole, budget = _plan_to_target(
            target, full, sites, options, costs, fit, skipped, clock, progress, (f"budget | {fingerprint}", int8),
            build={**build, "check": False, "refit": None},
        )
    del full  # a large model is not held twice past planning
    originals = {site.node_index: site for site, _ in pairs}  # what a layer left whole keeps
    pairs = _refitted(pairs, fit, compensate, build)
    # The layer timings are taken one layer at a time; if the assembled model is still measured
    # slower end to end, leave whole the layers with the smallest measured gains and try again.
    # The level found is kept in the cost table, so a rerun gives the same bytes.
    guards: tuple[float, ...] = (0.0,)
    if costs is not None and target is None:  # a target has its own end-to-end loop
        decision = f"end-to-end guard | {fingerprint}"
        recalled = costs.recall(decision)
        if recalled is not None:
            guards = (recalled,)
        elif check and latency_runs > 0:
            guards = GAIN_GUARDS
    for guard in guards:
        kept = [(s, p) for s, p in pairs if _passes(p, guard)]
        dropped = [(s, p) for s, p in pairs if not _passes(p, guard)]
        pruned, report = _assemble(
            [s for s, _ in kept], [p for _, p in kept], whole + [originals[s.node_index] for s, _ in dropped],
            skipped + [Skip(s.node_index, s.node, "Conv", _guard_reason(p, guard), s.macs) for s, p in dropped],
            options_record, budget=budget, **build,
        )
        if not _slower(pruned, report, int8, data, build):
            break
    if len(guards) > 1:
        costs.remember(decision, guard)
        costs.save()
    if int8 is not None:
        with clock("quantize"):
            pruned, report.quantization = _shipped(pruned, int8, data, metrics, build)
    if data is not None:
        with clock("fidelity"):
            report.fidelity = _fidelity(pruned, data, metrics, build)
        report.samples = {**data.counts, "held_out_index": list(data.held_index)}
    report.search = [{"allowance": round(a, 9), "score": s} for a, s in trail]
    return pruned, report


DEFAULT_RATIO = 0.25  # PlanOptions' ratio outside the uniform mode (only its refusal of tiny layers reads it)
DEFAULT_KEEP = 0.99  # with real inputs and no target: keep 99% top-1 agreement (or cosine) on held-out ones
DATA_FREE_ALLOWANCE = 0.004  # without data: each layer alone may cost this estimated relative output error


def _mode(ratio: Optional[float], target: Optional[Target], keep: Optional[float], data: Optional[Samples],
          metrics: Optional[dict[str, str]], model: onnx.ModelProto) -> str:
    """``target``, ``uniform`` (an explicit ratio), ``keep`` (a fidelity target; the default with
    data) or ``data-free`` (a conservative estimated-error allowance; the default without)."""
    names = {o.name for o in model.graph.output}
    for name, metric in (metrics or {}).items():
        if name not in names or metric not in TARGET_METRICS:
            raise GkpError(f"fidelity metric {name}:{metric}: outputs are {', '.join(sorted(names))}; "
                           f"metrics are {', '.join(TARGET_METRICS)}")
    if keep is not None and not 0.0 < keep <= 1.0:
        raise GkpError(f"keep must be in (0, 1], got {keep}")
    if keep is not None and data is None:
        raise GkpError("keep is measured on real inputs: give calibration data")
    if target is not None:  # it governs; a keep given with it is checked and reported
        if ratio is not None:
            raise GkpError("ratio is the uniform mode; give it or a target, not both")
        return "target"
    if ratio is not None:
        if keep is not None:
            raise GkpError("ratio is the uniform mode; give it or keep, not both")
        return "uniform"
    return "keep" if data is not None else "data-free"


def _feeds(model: onnx.ModelProto, analysis: Analysis, data: Optional[Samples], values: Optional[dict[str, float]],
           seed: int) -> dict[str, np.ndarray]:
    """The exactness check's inputs: held-out samples when there are some (up to 8, or the
    model's fixed batch size), else seeded noise with ``values`` for the inputs it names."""
    if data is not None:
        return {name: array[: batch_size(model, 8)] for name, array in data.held.items()}
    return random_inputs(model, analysis.input_shapes, seed, values)


def _allowed_ratios(
    keep: Optional[float], full: onnx.ModelProto, sites: list[ConvSite], options: PlanOptions,
    costs: Optional[CostTable], data: Optional[Samples], skipped: list[Skip],
    measure: tuple[Optional[dict[str, str]], Optional[Int8]], compensate: bool, build: dict,
) -> tuple[dict[int, float], list[tuple[float, float]]]:
    """Per-layer ratios from an error allowance: fixed and estimated without data, searched
    against the held-out fidelity with it (``keep.py``), on what ships (quantized with
    ``measure``'s types, if any); and the allowances measured."""
    clock = build["clock"]
    metrics, int8 = measure
    with clock("curves"):
        if data is None:
            consts, _ = constant_tensors(full)
            gains = ErrorGains(full, consts, StatsReader(full, consts))
            curves = estimated_curves(sites, options, {s.node_index: gains(s.node_index)[0] for s in sites},
                                      {s.node_index: second_moment(s) for s in sites})
            with clock("measure"):  # only the layers the allowance lets prune at all
                times = _grid_times([s for s in sites if curves[s.node_index][0] <= DATA_FREE_ALLOWANCE], costs)
            return ratios_within(curves, DATA_FREE_ALLOWANCE, times), []
        curves = measured_curves(full, sites, options, data.fit, build["threads"])
    with clock("measure"):
        times = _grid_times(sites, costs)
    tried: dict[tuple, tuple[float, float]] = {}

    def score(allowance: float) -> tuple[float, float]:
        ratios = ratios_within(curves, allowance, times)
        key = tuple(sorted(ratios.items()))
        if key not in tried:
            pairs, whole = _plan_sites(sites, options, costs, list(skipped), clock, False, ratios,
                                       _outside(build["analysis"]))
            pairs = _refitted(pairs, data.fit, compensate, build)
            pruned, _ = _assemble([s for s, _ in pairs], [p for _, p in pairs], whole, list(skipped), {},
                                  **{**build, "check": False})
            pruned = pruned if int8 is None else int8.shipped(pruned)
            figures = _fidelity(pruned, data, metrics, build)  # what --keep states, and a smoother estimate of it
            tried[key] = (model_score(figures) or 0.0, model_estimate(figures) or 0.0)
        return tried[key]

    with clock("search"):
        found, trail = search(levels(curves), score, keep)
    return (ratios_within(curves, found, times) if found is not None else {s.node_index: 0.0 for s in sites}), trail


def _grid_times(sites: list[ConvSite], costs: Optional[CostTable]) -> dict[int, tuple[float, ...]]:
    """Each timed layer's measured seconds at ``G = 1`` for every ratio of the allowance grid
    (without the input gather where a source Conv computes only the kept channels)."""
    if costs is None:
        return {}
    found = {}
    for site in sites:
        if site.geometry is not None:
            variants = [(1, kept_count(site.weight.shape[1], r), site.source is None) for r in GRID]
            measured = costs.times(site.geometry, variants)
            found[site.node_index] = tuple(measured[v] for v in variants)
    if found:
        costs.save()
    return found


def _refitted(pairs: list[tuple[ConvSite, LayerPlan]], fit: Optional[dict[str, np.ndarray]], compensate: bool,
              build: dict) -> list[tuple[ConvSite, LayerPlan]]:
    """The planned layers refitted on the fit samples, or with their data-free bias compensation."""
    if fit is not None:
        with build["clock"]("calibrate"):
            model = restored(build["original"], build["arrays"])
            fallback = [_compensated(s, p) for s, p in pairs] if compensate else None  # where a refit is declined
            return reconstructed(model, [s for s, _ in pairs], [p for _, p in pairs], fit, fallback=fallback,
                                 threads=build["threads"], seed=build["seed"])
    if compensate:
        with build["clock"]("plan"):
            return [(site, _compensated(site, plan)) for site, plan in pairs]
    return pairs


def _shipped(pruned: onnx.ModelProto, int8: Int8, data: Samples, metrics: Optional[dict[str, str]],
             build: dict) -> tuple[onnx.ModelProto, dict]:
    """The pruned model quantized, and how it compares with the pruned fp32 model and with the
    original quantized alone: fidelity on the held-out samples, latency side by side."""
    shipped = int8.shipped(pruned)
    record = {
        "types": int8.types, "chosen": int8.reason,
        "fidelity_int8_alone": _fidelity(int8.alone, data, metrics, build),
        "fidelity_pruned_fp32": _fidelity(pruned, data, metrics, build),
        "latency_ms": {},
    }
    if build["check"] and build["latency_runs"] > 0:
        models = {"original": restored(build["original"], build["arrays"]), "int8 alone": int8.alone,
                  "pruned": pruned, "pruned int8": shipped}
        record["latency_ms"] = median_latency_ms(models, _timing_feeds(data, build["analysis"]),
                                                 build["latency_runs"], build["threads"])
    return shipped, record


def _slower(pruned: onnx.ModelProto, report: Report, int8: Optional[Int8], data: Optional[Samples], build: dict) -> bool:
    """Whether the pruned model measured slower end to end than what the user has without it:
    the original, or with ``int8`` the original quantized alone (against the pruned one quantized)."""
    latency = report.validation.latency_ms if report.validation else {}
    if not latency or int8 is None:
        return bool(latency) and latency["pruned"] > latency["original"]
    feeds = _timing_feeds(data, build["analysis"])  # type: ignore[arg-type]
    return _time_ratio(pruned, int8.alone, int8, feeds, build["latency_runs"], build["threads"]) > 1.0


def _time_ratio(pruned: onnx.ModelProto, reference: onnx.ModelProto, int8: Optional[Int8], feeds: dict[str, np.ndarray],
                runs: int, threads: int) -> float:
    """The pruned model's median time over the reference's, side by side; with ``int8`` the
    pruned model quantized against the original quantized alone."""
    if int8 is not None:
        pruned, reference = int8.shipped(pruned), int8.alone
    times = median_latency_ms({"reference": reference, "pruned": pruned}, feeds, runs, threads)
    return times["pruned"] / times["reference"]


def _timing_feeds(data: Samples, analysis: Analysis) -> dict[str, np.ndarray]:
    """Held-out samples at the batch size the model is checked with."""
    return {name: array[: analysis.input_shapes[name][0]] for name, array in data.held.items()}


def _fidelity(pruned: onnx.ModelProto, data: Samples, metrics: Optional[dict[str, str]], build: dict) -> dict[str, dict]:
    """Per output, the pruned model against the original on the held-out samples."""
    full = restored(build["original"], build["arrays"])
    names = [o.name for o in full.graph.output]
    want = outputs_on(full, data.held, threads=build["threads"])
    got = outputs_on(pruned, data.held, threads=build["threads"])
    return fidelity(names, want, got, metrics)


MAX_THREADS = 4 * (os.cpu_count() or 1)  # more only queue: 10000 threads ran for minutes
GAIN_GUARDS = (0.0, 0.1, 0.2, 0.35, 0.5, float("inf"))  # the last prunes nothing: never slower
MACS_TOLERANCE = 0.005  # of the model's Conv MACs: how far past a MACs target the result may go
MACS_STEPS = 12
LATENCY_TOLERANCE = 0.03  # relative: a measured latency this close to the target is accepted
LATENCY_ATTEMPTS = 6


SENSITIVITY_RATIO = 0.25  # each layer's measured sensitivity: a quarter of its inputs pruned, G = 1


def _measured_gains(
    original: onnx.ModelProto, sites: list[ConvSite], options: PlanOptions, data: dict[str, np.ndarray],
    moments: dict[int, np.ndarray], threads: int,
) -> dict[int, tuple[float, str]]:
    """Error gains measured on calibration inputs: each layer pruned alone (``G = 1``, a quarter
    of its inputs), the model's relative output error over the layer's estimated relative error."""
    plans = [plan_for_count(s.weight, kernel_energy(s.weight), 1, kept_count(s.weight.shape[1], SENSITIVITY_RATIO), options)
             for s in sites]
    errors = output_errors(original, sites, plans, data, threads=threads)
    found = {}
    for site, plan, error in zip(sites, plans, errors):
        estimate = relative_error(weighted_energy(kernel_energy(site.weight), moments.get(site.node_index)),
                                  plan.keep_mask(site.weight.shape[1]))
        found[site.node_index] = (error / max(estimate, 1e-12),
                                  f"measured: relative output error {error:.3g} with {SENSITIVITY_RATIO:.0%} of its inputs pruned")
    return found


def _search_saving(fraction: float, most: float, measure: Callable[[float], float]) -> float:
    """The predicted saving (seconds, from the layer times) whose allocation measures closest to
    ``fraction`` of the original's time end to end; ``measure(need)`` gives that ratio.

    Layer times measured one at a time predict the end-to-end saving only roughly (layout
    conversions, gathers, trimmed sources), so the saving asked for is searched: the most
    pruning first (if even that misses the target, it is the answer), then a linear guess,
    then bisection between what measured too slow and too fast; ``LATENCY_ATTEMPTS``
    measurements at most. The answer is the first within ``LATENCY_TOLERANCE`` of the target,
    else the slowest that meets it.
    """
    tried = {most: measure(most)}
    if tried[most] > fraction * (1 + LATENCY_TOLERANCE):
        return most
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


def _target(target_macs: Optional[float], target_latency: Optional[float]) -> Optional[Target]:
    if target_macs is not None and target_latency is not None:
        raise GkpError("give --target-macs or --target-latency, not both")
    try:
        if target_macs is not None:
            return Target("macs", float(target_macs))
        if target_latency is not None:
            return Target("latency", float(target_latency))
    except ValueError as error:
        raise GkpError(str(error)) from None
    return None


def _plan_to_target(
    target: Target,
    original: onnx.ModelProto,
    sites: list[ConvSite],
    options: PlanOptions,
    costs: Optional[CostTable],
    data: Optional[dict[str, np.ndarray]],
    skipped: list[Skip],
    clock: "Stopwatch",
    progress: bool,
    measured: tuple[str, Optional[Int8]],
    build: dict,
) -> tuple[list[tuple[ConvSite, LayerPlan]], list[ConvSite], dict[int, dict]]:
    """Every layer's (kept count, G) or whole, chosen jointly to meet ``target``; ``original``
    is the model with its weights (``build["original"]`` may have released them).

    MACs: the allocation is exact, but a ``G = 1`` layer also lets its source stop computing
    the channels it drops (``rewrite._trim``), which the per-layer options do not see; the
    budget is loosened by bisection, keeping the loosest that still meets the target, until
    the assembled model is within ``MACS_TOLERANCE`` of it (``MACS_STEPS`` at most). Latency: the per-layer times do not add up exactly end to end,
    so the saving asked of them is searched against measured end-to-end ratios
    (:func:`_search_saving`); the value found is kept in the cost table, so a rerun gives the
    same bytes.
    """
    decision, int8 = measured  # the cost-table key of the saving found; what end-to-end time is measured in
    unit = "seconds" if target.kind == "latency" else "MACs"
    unknown = [s for s in sites if (s.geometry if target.kind == "latency" else s.macs) is None]
    if target.kind == "macs" and (unknown or any(s.macs is None for s in skipped if s.op_type == "Conv")):
        raise GkpError("--target-macs needs every Conv's output shape; give --test-shape for the dynamic inputs")
    for site in unknown:
        skipped.append(Skip(site.node_index, site.node, "Conv", "left whole: its input shape is unknown, so its time cannot be measured", site.macs))
    sites = [s for s in sites if s not in unknown]
    consts, _ = constant_tensors(original)
    gains = ErrorGains(original, consts, StatsReader(original, consts))
    with clock("calibrate"):
        measured = {} if data is None else input_moments(original, sites, data, threads=build["threads"])
        sensitivity = {} if data is None else _measured_gains(original, sites, options, data, measured, build["threads"])
    tables: list[list[Option]] = []
    paths: list[tuple[float, str]] = []
    for site in tqdm(sites, desc="options", unit="Conv", disable=not progress):
        gain, path = sensitivity.get(site.node_index) or gains(site.node_index)
        moments = measured.get(site.node_index, second_moment(site))
        with clock("measure" if target.kind == "latency" else "plan"):
            tables.append(layer_options(site, options, target.kind, gain, moments, costs))
        paths.append((gain, path))
    if costs is not None:
        costs.save()
    plans: dict[tuple[int, int, int], LayerPlan] = {}

    def realise(budget: float) -> tuple[list[tuple[ConvSite, LayerPlan]], list[ConvSite], list[Skip], dict[int, dict]]:
        try:
            chosen = allocate(tables, budget)
        except Infeasible as error:
            raise GkpError(f"the target cannot be met: {error} {unit}; no layer loses more than "
                               f"{MAX_LAYER_RATIO:.0%} of its input channels") from None
        pairs, whole, left, records = [], [], [], {}
        for site, table, j, (gain, path) in zip(sites, tables, chosen, paths):
            option = table[j]
            record = {"estimated_quality_cost": round(option.quality, 6), unit: round(option.cost, 9),
                      "whole": round(table[0].cost, 9), "error_gain": round(gain, 6), "gain_path": path,
                      "alternatives [keep, G, quality cost, " + unit + "]": alternatives(table[1:])}
            if j == 0:
                whole.append(site)
                cheapest = min(table[1:], key=lambda o: o.quality, default=None)
                note = "" if cheapest is None else (f" (least costly cut: keep {cheapest.keep}/{site.weight.shape[1]} "
                                                    f"with G={cheapest.groups}, quality cost {cheapest.quality:.3g})")
                left.append(Skip(site.node_index, site.node, "Conv", "left whole by the budget" + note, site.macs))
                continue
            key = (site.node_index, option.groups, option.keep)
            if key not in plans:
                with clock("plan"):
                    plans[key] = plan_for_count(site.weight, kernel_energy(site.weight), option.groups, option.keep, options)
            timing = {"times": {option.groups: option.cost}, "dense_time": table[0].cost} if target.kind == "latency" else {}
            pairs.append((site, replace(plans[key], **timing)))
            records[site.node_index] = record
        return pairs, whole, left, records

    def assembled(pairs: list, whole: list, left: list) -> tuple[onnx.ModelProto, Report]:
        return _assemble([s for s, _ in pairs], [p for _, p in pairs], whole, skipped + left, {}, **build)

    whole_cost = sum(t[0].cost for t in tables)
    least = sum(min(o.cost for o in t) for t in tables)  # the most pruning possible keeps this
    if target.kind == "macs":
        total = sum(s.macs for s in sites) + sum(s.macs for s in skipped if s.op_type == "Conv")
        most = (whole_cost - least) / total
        if target.fraction > most:
            raise GkpError(f"--target-macs {target.fraction:g} cannot be met: at most {most:.1%} of this model's Conv MACs "
                           f"can be removed (no layer loses more than {MAX_LAYER_RATIO:.0%} of its input channels)")
        goal = target.fraction * total

        def removed(choice: tuple) -> float:
            return total - assembled(*choice[:3])[1].totals["conv_macs_after"]

        # The budget itself always meets the goal (trimming only removes more); bisect towards
        # the loosest budget that still does.
        low, high = whole_cost - goal, whole_cost
        chosen = realise(low)
        excess = removed(chosen) - goal
        for _ in range(MACS_STEPS):
            if excess <= MACS_TOLERANCE * total:
                break
            middle = realise((low + high) / 2)
            more = removed(middle) - goal
            if more >= 0:
                low, chosen, excess = (low + high) / 2, middle, more
            else:
                high = (low + high) / 2
        pairs, whole, left, records = chosen
    else:
        feeds = random_inputs(original, build["analysis"].input_shapes, build["seed"])
        runs = max(build["latency_runs"], 10)
        recalled = costs.recall(decision)  # the predicted saving chosen last time, in seconds

        def measure(need: float) -> float:
            return _time_ratio(assembled(*realise(whole_cost - need)[:3])[0], original, int8, feeds, runs, build["threads"])

        need = recalled if recalled is not None else _search_saving(target.fraction, whole_cost - least, measure)
        pairs, whole, left, records = realise(whole_cost - need)
        costs.remember(decision, need)
        costs.save()
    skipped.extend(left)
    skipped.sort(key=lambda s: s.node_index)
    return pairs, whole + unknown, records  # the unknown ones are whole too (their weights come back)


def _plan_sites(
    sites: list[ConvSite],
    options: PlanOptions,
    costs: Optional[CostTable],
    skipped: list[Skip],
    clock: "Stopwatch",
    progress: bool,
    ratios: Optional[dict[int, float]] = None,
    outside: frozenset[int] = frozenset(),
) -> tuple[list[tuple[ConvSite, LayerPlan]], list[ConvSite]]:
    """Time and plan every site in graph order, at its own ratio where ``ratios`` gives one; the
    planned pairs, and the sites left whole (added to ``skipped`` with their reason).

    ``outside``: the Convs outside the sites a site reads as its source (``Analysis.sources``),
    always trimmed by a ``G = 1`` reader: its ``G = 1`` is timed without the input gather, and
    credited nothing more (they are not timed)."""
    planned: list[tuple[ConvSite, LayerPlan]] = []
    whole: list[ConvSite] = []  # left whole: a reader with G = 1 may still trim their filters
    # timed sites a G = 1 reader can trim, and their time; the outside sources, untimed
    became: dict[int, tuple[Optional[ConvSite], float]] = {i: (None, 0.0) for i in outside}
    for site in tqdm(sites, desc="planning", unit="Conv", disable=None if progress else True):
        # Sites come in graph order, so a source's plan is known before its reader's.
        source = became.get(site.source[0]) if site.source is not None else None
        own = options if ratios is None else replace(options, ratio=ratios[site.node_index])
        if own.refusal(*site.weight.shape[:2]) is not None:
            skipped.append(Skip(site.node_index, site.node, "Conv", ALLOWANCE_REASON, site.macs))
            whole.append(site)
            continue
        with clock("measure"):
            times = _candidate_times(site, own, costs, source)
        with clock("plan"):
            plan = plan_layer(site.weight, own, *times)
        if plan is None:
            skipped.append(Skip(site.node_index, site.node, "Conv", none_fast_reason(*times), site.macs))
            whole.append(site)
            if times[1] is not None:
                became[site.node_index] = (site, times[1])
        else:
            planned.append((site, plan))
            if plan.groups == 1 and plan.dense_time is not None:
                became[site.node_index] = (site, plan.times[1])
    if costs is not None:
        costs.save()
    return planned, whole


ALLOWANCE_REASON = "left whole: pruning even an eighth of its inputs costs more error than the allowance"


def _gain(plan: LayerPlan) -> float:
    return 1.0 - plan.times[plan.groups] / plan.dense_time


def _passes(plan: LayerPlan, guard: float) -> bool:
    """Kept at this guard level: untimed, or measured at least ``guard`` faster than dense."""
    return plan.dense_time is None or _gain(plan) >= guard


def _guard_reason(plan: LayerPlan, guard: float) -> str:
    if guard == float("inf"):
        return f"left whole: measured {_gain(plan):.0%} faster alone, but no selection of layers made this model faster end to end"
    return (f"left whole: measured {_gain(plan):.0%} faster alone, below the {guard:.0%} gain this model "
            f"needed to come out faster end to end")


def _assemble(
    sites: list[ConvSite],
    plans: list[LayerPlan],
    whole: list[ConvSite],
    skipped: list[Skip],
    options: dict,
    *,
    original: onnx.ModelProto,
    analysis: Analysis,
    check: bool,
    latency_runs: int,
    seed: int,
    threads: int,
    clock: "Stopwatch",
    refit: Optional[str],
    arrays: dict[str, np.ndarray],
    feeds: dict[str, np.ndarray],
    real: bool,
    budget: Optional[dict[int, dict]] = None,
) -> tuple[onnx.ModelProto, Report]:
    """Rewrite, check, report and (with ``check``) validate one selection of planned layers.

    ``original`` lacks the weights of the sites (:func:`~onnx_gkp.load.release`): the rewrite
    takes them from the sites, validation from ``arrays``.
    """
    with clock("rewrite"):
        probes = [original.graph.node[s.node_index].output[0] for s in sites] if check else []
        # Convs outside the sites that a site reads (analyse: ``sources``) are trimmed like whole ones.
        rewritten = rewrite(original, sites, plans, probes, whole=whole + analysis.sources)
        skipped = sorted((_trimmed(s, rewritten.dead_filters, rewritten.filters) for s in skipped), key=lambda s: s.node_index)
        pruned = rewritten.model
    with clock("check"):
        try:
            check_onnx(pruned, "the pruned model", full=True)
        except GkpError as error:
            raise ValidationFailed(f"onnx.checker refuses {error}") from None
    budget = budget or {}
    layers = [LayerReport.of(s, p, rewritten.dead_filters.get(s.node_index, ()), refit, budget.get(s.node_index))
              for s, p in zip(sites, plans)]
    report = Report(
        options=options,
        input_shapes={k: list(v) for k, v in analysis.input_shapes.items()},
        layers=layers,
        skipped=skipped,
        totals=totals(layers, skipped, count_params(original), count_params(pruned), rewritten.gathers),
        timings=clock.seconds,
    )
    if check:
        with clock("validate"):
            stubs, parts = None, None
            if weight_bytes(original) <= WHOLE_LIMIT:
                full = restored(original, arrays)
                masked = masked_reference(full, sites, plans)
            else:  # never a whole copy of the weights: made a part at a time (validate.py)
                full, parts = None, PART_BYTES
                masked, made = masked_stubs(original, sites, plans)
                stubs = {**{name: functools.partial(np.asarray, a) for name, a in arrays.items()}, **made}
            try:
                report.validation = validate(
                    pruned, masked, full, analysis.input_shapes, seed, latency_runs,
                    probes=rewritten.probes, threads=threads, probed=rewritten.probed, feeds=feeds, real=real,
                    masked_stubs=stubs, part_bytes=parts,
                )
            except ValidationFailed as error:
                raise ValidationFailed(f"validation failed: {error} (--no-validate writes the model unchecked)") from None
        if not report.validation.passed:
            raise ValidationFailed(
                f"the pruned model differs from its masked reference by {report.validation.masked_max_abs_diff:.3g} "
                f"(relative {report.validation.masked_max_rel_diff:.3g})",
                report,
            )
    return pruned, report


class Stopwatch:
    """Wall-clock seconds per pipeline stage, for ``--verbose`` and the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


Timing = tuple[Optional[dict[int, float]], Optional[float]]


def _candidate_times(
    site: ConvSite, options: PlanOptions, costs: Optional[CostTable], source: Optional[tuple[Optional[ConvSite], float]]
) -> Timing:
    """Measured seconds of every candidate count at this layer's kept count, and of the dense Conv.

    With a ``source`` (the Conv feeding this one, pruned with ``G = 1`` or left whole, and its
    measured time), ``G = 1`` needs no input gather and the source stops computing the
    channels left out (``rewrite._trim``): ``G = 1`` is timed without the gather and credited
    the source's time in proportion to the filters it drops. (Timing the source again with
    fewer filters, in isolation, was tried: it credited too little, and the ResNet-50 shape
    came out at 1.77x instead of 2.15x end to end.) ``(None, None)`` when nothing is
    measured: a fixed ``--groups``, quality-only runs, or a layer whose input shape is unknown.
    """
    if costs is None or site.geometry is None:
        return None, None
    c_out, c_in = site.weight.shape[:2]
    keep = kept_count(c_in, options.ratio)
    variants = {g: (g, keep, not (source is not None and g == 1)) for g in candidate_counts(c_out, options.max_groups)}
    measured = costs.times(site.geometry, list(variants.values()))
    times = {g: measured[v] for g, v in variants.items()}
    if source is not None:
        times[1] = max(times[1] - source[1] * (1 - keep / c_in), 0.0)
    return times, measured[site.geometry.dense]


def _compensated(site: ConvSite, plan: LayerPlan) -> LayerPlan:
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
            site.geometry.input_shape[2:], kernel, attrs.get("strides"), attrs.get("dilations"),
            attrs.get("pads"), str(attrs.get("auto_pad", "NOTSET")),
        )
    delta = bias_delta(site.weight, plan.keep_mask(site.weight.shape[1]), site.input_stats.mean, coverage)
    return replace(plan, bias_delta=tuple(float(d) for d in delta))


def _outside(analysis: Analysis) -> frozenset[int]:
    return frozenset(s.node_index for s in analysis.sources)


def _trimmed(skip: Skip, dead_filters: dict[int, list[int]], filters: dict[int, int]) -> Skip:
    """A Conv left whole (or depthwise, on a trimmed chain) whose unread filters the rewrite
    dropped, with its MACs after."""
    dead = dead_filters.get(skip.node_index)
    if not dead:
        return skip
    c_out = filters[skip.node_index]
    after = None if skip.macs is None else skip.macs * (c_out - len(dead)) // c_out
    return replace(skip, dead_filters=tuple(dead), macs_after=after)


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
