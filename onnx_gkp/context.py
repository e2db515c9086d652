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
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import onnx

from .analyse.graph import count_params
from .analyse.sites import Analysis, ConvSite, Skip, analyse
from .check.calibration import CalibrationCheck, calibration_checks, strict_refusal
from .check.metrics import fidelity, model_estimate
from .check.reference import masked_reference, masked_stubs
from .check.validate import Exposed, Inputs, Validation, validate
from .cost.table import CostTable
from .errors import GkpError, ValidationFailed
from .io.model_file import ModelLike, check_onnx, digest, load_model, release, restored
from .io.samples import Samples, load_samples, split
from .layer.planner import LayerPlan, PlanOptions
from .limits import DEFAULT_KEEP, PART_BYTES, WHOLE_LIMIT
from .options import Mode, Options
from .plan.model import Pairs, Plan, PlannedLayer
from .plan.trims import decide_trims, trimmed
from .prepare import Stopwatch, check_feeds, check_runs, prunable
from .refit.activations import outputs_on
from .refit.compensated import compensated
from .refit.reconstruct import reconstructed
from .report.report import LayerReport, Report, totals
from .rewrite.conv import Rewritten
from .rewrite.model import rewritten, sites_of
from .runtime.sessions import check_supported, weight_bytes
from .runtime.timing import median_latency_ms
from .ship.int8 import Int8, int8_original


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
    # the original's outputs on the held-out samples: every fidelity figure reads them
    held_outputs: Optional[list[np.ndarray]]
    clock: Stopwatch = field(default_factory=Stopwatch)
    costs: Optional[CostTable] = None  # the layer timings, when layers are timed to choose
    int8: Optional[Int8] = None
    checks: Optional[tuple[CalibrationCheck, ...]] = None  # what the calibration data failed (check/calibration.py)

    @classmethod
    def open(cls, model: ModelLike, options: Options, cache: object) -> "Context":
        """Load, analyse and split the samples; quantize the original when INT8 ships."""
        clock = Stopwatch()
        with clock("load"):
            full = load_model(model)
            check_supported(full)
        with clock("analyse"):
            analysis = analyse(full, options.include, options.exclude, options.test_shapes, options.min_in_channels)
            sites, skipped = prunable(analysis, options)
        loaded = None if options.calibration is None else load_samples(options.calibration, full, options.preprocess)
        data = None if loaded is None else split(loaded, options.seed)
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
            check_runs(full, feeds, data is not None)
        held = None if data is None else outputs_on(full, data.held, threads=options.threads)
        checks = None
        if loaded is not None:
            with clock("check data"):
                checks = tuple(calibration_checks(full, loaded, held))
            if checks and options.strict:
                raise GkpError(strict_refusal(checks))
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
            checks=checks,
        )
        return context if options.quantize is None else context._with_int8(full, table)  # type: ignore[arg-type]

    def _with_int8(self, full: onnx.ModelProto, table: CostTable) -> "Context":
        """The context with the original quantized as ``--quantize`` ships it; layers are then
        timed at the precision they will run in."""
        with self.clock("quantize"):
            int8 = int8_original(
                self.options.quantize,  # type: ignore[arg-type]
                full,
                self.data.fit,  # type: ignore[union-attr]
                self.timing_feeds(),
                table,
                self.options.threads,
                self.options.latency_runs,
                lambda model: model_estimate(self.fidelity(model)),
            )
        if self.costs is not None:
            self.costs.precision = int8.types
        return replace(self, int8=int8)

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
        refit = (
            None
            if self.fit is None
            else f"weights and bias refitted on {len(next(iter(self.fit.values())))} calibration samples"
        )
        layers = [
            LayerReport.of(s, p, dead.get(s.node_index, ()), refit, (extra or {}).get(s.node_index))
            for s, p in (pairs if pairs is not None else sites_of(plan, self.sites))
        ]
        return layers, sorted((trimmed(s, plan.trims) for s in skipped), key=lambda s: s.node_index)

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
            calibration_checks=None if self.checks is None else list(self.checks),
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
