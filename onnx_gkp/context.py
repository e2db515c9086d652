"""What one run knows once the model is loaded, and the steps every policy repeats on a plan.

A :class:`Context` holds the loaded and analysed model, the options, the calibration split,
the cost table and the clock. Policies (``policy/``) produce plans and measure them through it:
:meth:`Context.assemble` applies a plan (``rewrite/model.py``), checks and reports it, and with
``check`` validates it against its masked reference; :meth:`Context.fidelity` and
:meth:`Context.time_ratio` measure it. The model held here lacks the weights of the prunable
Convs (:func:`~onnx_gkp.io.model_file.release`): the sites hold them, and :meth:`Context.full` puts
them back to run it.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

import numpy as np
import onnx

from .analyse.bn_stats import ChannelStats
from .analyse.graph import count_params
from .analyse.shapes import kept_macs
from .analyse.sites import Analysis, ConvSite, Skip, analyse
from .check.metrics import fidelity, model_estimate
from .check.reference import masked_reference, masked_stubs
from .check.validate import Exposed, Inputs, Validation, validate
from .cost.table import CostTable
from .errors import GkpError, ValidationFailed
from .io.model_file import ModelLike, check_onnx, digest, load_model, release, restored
from .io.samples import Samples, load_samples, split
from .layer.compensation import bias_delta, tap_coverage
from .layer.planner import LayerPlan, PlanOptions
from .limits import DEFAULT_KEEP, PART_BYTES, WHOLE_LIMIT
from .options import Mode, Options
from .plan.model import Pairs, Plan, PlannedLayer
from .plan.trims import decide_trims
from .refit.activations import outputs_on
from .refit.reconstruct import reconstructed
from .report.report import LayerReport, Report, totals
from .rewrite.conv import Rewritten
from .rewrite.model import rewritten, sites_of
from .runtime.sessions import batch_size, check_supported, ort_message, random_inputs, session, weight_bytes
from .runtime.timing import median_latency_ms
from .ship.int8 import Int8, int8_original


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


@dataclass(frozen=True)
class Context:
    """One run's model, options, data and tools, fixed once opened; ``sites`` are the Convs a plan
    may prune, ``skipped`` the Convs analysis left alone, with their reasons."""

    options: Options
    original: onnx.ModelProto  # without the sites' weights
    arrays: dict[str, np.ndarray]  # the sites' weights, by initializer name
    analysis: Analysis
    sites: list[ConvSite]
    skipped: list[Skip]
    data: Optional[Samples]
    mode: Mode
    keep: Optional[float]
    digest: str
    feeds: dict[str, np.ndarray]  # the exactness check's inputs (:func:`check_feeds`)
    held_outputs: Optional[
        list[np.ndarray]
    ]  # the original's outputs on the held-out samples: every fidelity figure reads them
    clock: Stopwatch = field(default_factory=Stopwatch)
    costs: Optional[CostTable] = None  # the layer timings, when layers are timed to choose
    int8: Optional[Int8] = None

    @classmethod
    def open(cls, model: ModelLike, options: Options, cache: object) -> "Context":
        """Load, analyse and split the samples; quantize the original when INT8 ships."""
        clock = Stopwatch()
        with clock("load"):
            full = load_model(model)
            check_supported(full)
        with clock("analyse"):
            analysis = analyse(full, options.include, options.exclude, options.test_shapes, options.min_in_channels)
            sites, skipped = (
                _apply_plan_limits(analysis, options.plan_options)
                if options.plan is None
                else _planned(analysis, options.plan)
            )
        data = (
            None
            if options.calibration is None
            else split(load_samples(options.calibration, full, options.preprocess), options.seed)
        )
        mode = options.mode(data is not None, {o.name for o in full.graph.output})
        keep = DEFAULT_KEEP if mode == "keep" and options.keep is None else options.keep
        options.check_quantize(data is not None)
        table = CostTable(options.threads, cache) if options.timed or options.quantize == "int8" else None  # type: ignore[arg-type]
        if options.plan is not None and options.plan.model != digest(full):
            raise GkpError("the plan was made for another model (its digest differs)")
        # The sites hold their weights as arrays: the model need not hold them too (restored to run).
        arrays = {full.graph.node[s.node_index].input[1]: s.weight for s in sites}
        original = release(full, arrays)
        feeds = check_feeds(original, analysis, data, options)
        if options.check:
            _check_runs(full, feeds, data is not None)
        held = None if data is None else outputs_on(full, data.held, threads=options.threads)
        context = cls(
            options,
            original,
            arrays,
            analysis,
            sites,
            skipped,
            data,
            mode,
            keep,
            digest(full),
            feeds,
            held,
            clock,
            table if options.timed else None,
        )
        if options.quantize is None:
            return context
        with clock("quantize"):
            int8 = int8_original(
                options.quantize,
                full,
                data.fit,
                context.timing_feeds(),
                table,  # type: ignore[union-attr, arg-type]
                options.threads,
                options.latency_runs,
                lambda model: model_estimate(context.fidelity(model)),
            )
        if context.costs is not None:
            context.costs.precision = int8.types  # layers are timed as they will run
        return replace(context, int8=int8)

    @property
    def decisions(self) -> dict[str, Any]:
        """What the run decided before any policy, for the plan's record."""
        return {} if self.int8 is None else {"int8_types": self.int8.types}

    @property
    def plan_options(self) -> PlanOptions:
        return self.options.plan_options

    @property
    def fit(self) -> Optional[dict[str, np.ndarray]]:
        return None if self.data is None else self.data.fit

    @property
    def fingerprint(self) -> str:
        """What a decision remembered in the cost table depends on: the model and the options."""
        if self.costs is None:
            return ""
        samples = None if self.data is None else self.data.counts
        return f"{self.digest} | {self.options.record(self.mode, self.keep, samples)} | {self.options.test_shapes}"

    def full(self) -> onnx.ModelProto:
        """The original model, weights and all."""
        return restored(self.original, self.arrays)

    def timing_feeds(self) -> dict[str, np.ndarray]:
        """Held-out samples at the batch size the model is checked with (without data, the check's inputs)."""
        if self.data is None:
            return self.feeds
        return {name: array[: self.analysis.input_shapes[name][0]] for name, array in self.data.held.items()}

    def plan(self, pairs: Pairs, whole: list[ConvSite], decisions: Optional[dict[str, Any]] = None) -> Plan:
        """The plain plan of planned ``pairs`` (refitted sites carry their new weights) and ``whole``
        sites; ``decisions``: what the policy measured to choose them, for the record."""
        weights = {s.node_index: s.weight for s in self.sites}
        layers = tuple(
            PlannedLayer(
                s.node_index, p, *((None, None) if s.weight is weights.get(s.node_index) else (s.weight, s.bias))
            )
            for s, p in pairs
        )
        o = self.options
        analysis = {
            "include": o.include,
            "exclude": o.exclude,
            "min_in_channels": o.min_in_channels,
            "test_shapes": None if o.test_shapes is None else {k: list(v) for k, v in o.test_shapes.items()},
        }
        trims = decide_trims(self.original, [s for s, _ in pairs], [p for _, p in pairs], whole + self.analysis.sources)
        return Plan(
            self.digest,
            layers,
            tuple(s.node_index for s in whole),
            analysis,
            trims,
            {**self.decisions, **(decisions or {})},
        )

    def planned_report(
        self, plan: Plan, skipped: list[Skip], extra: Optional[dict[int, dict]] = None, pairs: Optional[Pairs] = None
    ) -> tuple[list[LayerReport], list[Skip]]:
        """The per-layer records and the skips of ``plan`` (its ``pairs``, where known), MACs and
        all, known without a rewrite."""
        dead = {i: t.dead for i, t in plan.trims.items()}
        filters = {i: t.filters for i, t in plan.trims.items()}
        refit = (
            None
            if self.fit is None
            else f"weights and bias refitted on {len(next(iter(self.fit.values())))} calibration samples"
        )
        layers = [
            LayerReport.of(s, p, dead.get(s.node_index, ()), refit, (extra or {}).get(s.node_index))
            for s, p in (pairs if pairs is not None else sites_of(plan, self.sites))
        ]
        return layers, sorted((_trimmed(s, dead, filters) for s in skipped), key=lambda s: s.node_index)

    def macs_after(self, plan: Plan, skipped: list[Skip]) -> Optional[int]:
        """The Conv MACs ``plan`` leaves, from the plan alone."""
        layers, skipped = self.planned_report(plan, skipped)
        return totals(layers, skipped, 0, 0, 0)["conv_macs_after"]

    def refitted(self, pairs: list[tuple[ConvSite, LayerPlan]]) -> list[tuple[ConvSite, LayerPlan]]:
        """The planned layers refitted on the fit samples, or with their data-free bias compensation."""
        compensate = self.options.compensate
        if self.fit is not None:
            with self.clock("calibrate"):
                fallback = [compensated(s, p) for s, p in pairs] if compensate else None  # where a refit is declined
                return reconstructed(
                    self.full(),
                    [s for s, _ in pairs],
                    [p for _, p in pairs],
                    self.fit,
                    fallback=fallback,
                    threads=self.options.threads,
                    seed=self.options.seed,
                )
        if compensate:
            with self.clock("plan"):
                return [(site, compensated(site, plan)) for site, plan in pairs]
        return pairs

    def assemble(
        self, plan: Plan, skipped: list[Skip], check: bool, extra: Optional[dict[int, dict]] = None
    ) -> tuple[onnx.ModelProto, Report]:
        """Apply, check, report and (with ``check``) validate one plan; ``extra``: per node index,
        the budget's record of the choice, for the report."""
        options = self.options
        sites = sites_of(plan, self.sites)
        with self.clock("rewrite"):
            probes = [self.original.graph.node[s.node_index].output[0] for s, _ in sites] if check else []
            result = rewritten(self.original, self.analysis, plan, self.sites, sites, probes)
        with self.clock("check"):
            try:
                check_onnx(result.model, "the pruned model", full=True)
            except GkpError as error:
                raise ValidationFailed(f"onnx.checker refuses {error}") from None
        layers, skipped = self.planned_report(plan, skipped, extra, sites)
        report = Report(
            options=options.record(self.mode, self.keep, None if self.data is None else self.data.counts),
            input_shapes={k: list(v) for k, v in self.analysis.input_shapes.items()},
            layers=layers,
            skipped=skipped,
            totals=totals(layers, skipped, count_params(self.original), count_params(result.model), result.gathers),
            timings=self.clock.seconds,
            plan=plan,
        )
        if check:
            with self.clock("validate"):
                report.validation = self.validated(result, sites)
            v = report.validation
            if not v.passed:
                raise ValidationFailed(
                    f"the pruned model differs from its masked reference by {v.masked_max_abs_diff:.3g} "
                    f"(relative {v.masked_max_rel_diff:.3g})",
                    report,
                )
        return result.model, report

    def validated(self, result: Rewritten, sites: list[tuple[ConvSite, LayerPlan]]) -> Validation:
        """The rewrite against its masked reference."""
        stubs, parts, full = None, None, None
        if weight_bytes(self.original) <= WHOLE_LIMIT:
            full = self.full()
            masked = masked_reference(full, [s for s, _ in sites], [p for _, p in sites])
        else:  # never a whole copy of the weights: made a part at a time (validate.py)
            parts = PART_BYTES
            masked, made = masked_stubs(self.original, [s for s, _ in sites], [p for _, p in sites])
            stubs = {**{name: functools.partial(np.asarray, a) for name, a in self.arrays.items()}, **made}
        o = self.options
        try:
            return validate(
                result.model,
                masked,
                full,
                inputs=Inputs(self.feeds, self.analysis.input_shapes, o.seed, self.data is not None),
                probes=result.probes,
                exposed=Exposed(result.probed, stubs, parts),
                latency_runs=o.latency_runs,
                threads=o.threads,
            )
        except ValidationFailed as error:
            raise ValidationFailed(f"validation failed: {error} (--no-validate writes the model unchecked)") from None

    def fidelity(self, pruned: onnx.ModelProto) -> dict[str, dict]:
        """Per output, ``pruned`` against the original on the held-out samples."""
        names = [o.name for o in self.original.graph.output]
        got = outputs_on(pruned, self.data.held, threads=self.options.threads)  # type: ignore[union-attr]
        return fidelity(names, self.held_outputs, got, self.options.metrics)

    def time_ratio(
        self, pruned: onnx.ModelProto, reference: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int
    ) -> float:
        """The pruned model's median time over the reference's, side by side; with INT8 the
        pruned model quantized against the original quantized alone."""
        if self.int8 is not None:
            pruned, reference = self.int8.shipped(pruned), self.int8.alone
        times = median_latency_ms({"reference": reference, "pruned": pruned}, feeds, runs, self.options.threads)
        return times["pruned"] / times["reference"]

    def shipped_time_ratio(self, first: onnx.ModelProto, second: onnx.ModelProto, runs: int) -> float:
        """``first``'s median time over ``second``'s, side by side, both as they would ship
        (quantized with ``--quantize``)."""
        if self.int8 is not None:
            first, second = self.int8.shipped(first), self.int8.shipped(second)
        times = median_latency_ms({"first": first, "second": second}, self.timing_feeds(), runs, self.options.threads)
        return times["first"] / times["second"]

    def shipped(self, pruned: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
        """The pruned model quantized, and how it compares with the pruned fp32 model and with the
        original quantized alone: fidelity on the held-out samples, latency side by side."""
        int8 = self.int8
        shipped = int8.shipped(pruned)  # type: ignore[union-attr]
        record = {
            "types": int8.types,
            "chosen": int8.reason,  # type: ignore[union-attr]
            "fidelity_int8_alone": self.fidelity(int8.alone),  # type: ignore[union-attr]
            "fidelity_pruned_fp32": self.fidelity(pruned),
            "latency_ms": {},
        }
        if self.options.check and self.options.latency_runs > 0:
            models = {"original": self.full(), "int8 alone": int8.alone, "pruned": pruned, "pruned int8": shipped}  # type: ignore[union-attr]
            record["latency_ms"] = median_latency_ms(
                models, self.timing_feeds(), self.options.latency_runs, self.options.threads
            )
        return shipped, record


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


def _trimmed(skip: Skip, dead_filters: dict[int, list[int]], filters: dict[int, int]) -> Skip:
    """A Conv left whole (or depthwise, on a trimmed chain) whose unread filters the plan's trims
    drop, with its MACs after."""
    dead = dead_filters.get(skip.node_index)
    if not dead:
        return skip
    c_out = filters[skip.node_index]
    return replace(skip, dead_filters=tuple(dead), macs_after=kept_macs(skip.macs, c_out - len(dead), c_out))


def _planned(analysis: Analysis, plan: Plan) -> tuple[list[ConvSite], list[Skip]]:
    """The sites a plan prunes or leaves whole; the others are left alone, as they were."""
    named = {layer.node_index for layer in plan.layers} | set(plan.whole)
    sites = [s for s in analysis.sites if s.node_index in named]
    alone = [
        Skip(s.node_index, s.node, "Conv", "left alone by the plan", s.macs)
        for s in analysis.sites
        if s.node_index not in named
    ]
    return sites, sorted(analysis.skipped + alone, key=lambda s: s.node_index)


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


def _check_runs(model: onnx.ModelProto, feeds: dict[str, np.ndarray], real: bool) -> None:
    """Bad input, before any work: the original loads but cannot run on the check's inputs (an
    input that wants one value, such as silero-vad's sample rate, is fed zeros), so no check of a
    rewrite could pass. A model onnxruntime cannot load is left to the check, which says so; past
    ``WHOLE_LIMIT`` of weights nothing is tried: a whole session is what that avoids."""
    if weight_bytes(model) > WHOLE_LIMIT:
        return
    try:
        loaded = session(model, optimise=False)
    except ValidationFailed:
        return
    try:
        loaded.run(None, feeds)
    except Exception as error:  # onnxruntime raises several unrelated types here
        given = (
            "the held-out samples of --calibration"
            if real
            else ("seeded noise (" + ", ".join(f"{n}: {list(a.shape)} {a.dtype}" for n, a in feeds.items()) + ")")
        )
        hint = (
            "check the samples"
            if real
            else "give --input-value NAME=V for an input that needs one value, or --test-shape"
        )
        raise GkpError(
            f"the original model cannot run on the check's inputs, {given}: {ort_message(error)}; {hint}"
        ) from None


def check_feeds(
    model: onnx.ModelProto, analysis: Analysis, data: Optional[Samples], options: Options
) -> dict[str, np.ndarray]:
    """The exactness check's inputs: held-out samples when there are some (up to 8, or the
    model's fixed batch size), else seeded noise with ``input_values`` for the inputs it names."""
    if data is not None:
        return {name: array[: batch_size(model, 8)] for name, array in data.held.items()}
    return random_inputs(model, analysis.input_shapes, options.seed, options.input_values)
