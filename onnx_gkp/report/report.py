"""The audit record of one run: what was pruned and how, what was left and why, what it gave.

A :class:`Report` is plain data. Its JSON form is enough to redo the pruning without this
package: for each layer, zero ``W[f, c]`` unless ``c`` is in ``kept_channels[g]`` for the
group ``g`` whose ``filter_groups[g]`` holds ``f``, and add ``bias_delta`` (where present) to
the bias; the rewritten Conv's output channel ``g * n + i`` is filter ``filter_groups[g][i]``.
Weights refitted from calibration data (``--calibration``) are the exception: they live in the
pruned model only, and the layer's ``compensation`` says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..analyse.shapes import kept_macs
from ..analyse.sites import ConvSite, Skip
from ..check.calibration import CalibrationCheck
from ..check.metrics import model_score, samples_to_show, wilson
from ..check.validate import Validation
from ..io.samples import held_in
from ..layer.planner import LayerPlan
from ..plan.model import Plan


@dataclass(frozen=True)
class LayerReport:
    node: str
    node_index: int
    weight_shape: list[int]
    groups: int
    kept_per_group: int
    filter_groups: list[list[int]]
    kept_channels: list[list[int]]
    macs_before: Optional[int]
    macs_after: Optional[int]
    params_before: int
    params_after: int
    pruned_energy: float
    candidates: dict[str, float]
    dense_us: Optional[float] = None
    candidate_us: dict[str, float] = dataclasses.field(default_factory=dict)
    dead_filters: list[int] = dataclasses.field(default_factory=list)
    compensation: str = "off"
    bias_delta: Optional[list[float]] = None
    budget: Optional[dict[str, Any]] = None

    @classmethod
    def of(
        cls,
        site: ConvSite,
        plan: LayerPlan,
        dead_filters: Sequence[int] = (),
        refit: Optional[str] = None,
        budget: Optional[dict[str, Any]] = None,
    ) -> "LayerReport":
        """``dead_filters``: filters no longer computed at all, as no kept kernel downstream reads
        them; ``refit`` says how the weights were refitted from calibration data, if they were;
        ``budget``: under a target, the choice's estimated costs and the alternatives it beat."""
        c_out, c_in, *kernel = site.weight.shape
        live = c_out - len(dead_filters)
        bias = live if site.bias is not None or plan.bias_delta is not None else 0
        stats = site.input_stats
        if refit is not None and plan.declined_refit is None:
            compensation = refit
        elif plan.bias_delta is not None:
            compensation = f"input mean from {stats.path}"  # type: ignore[union-attr]
        else:
            compensation = stats if isinstance(stats, str) else "off"
        if plan.declined_refit is not None:  # masked weights and the data-free compensation instead
            compensation = (
                f"{plan.declined_refit}; {'data-free compensation off' if compensation == 'off' else compensation}"
            )
        m = plan.kept_per_group
        return cls(
            node=site.node,
            node_index=site.node_index,
            weight_shape=list(site.weight.shape),
            groups=plan.groups,
            kept_per_group=m,
            filter_groups=[list(g) for g in plan.filter_groups],
            kept_channels=[list(k) for k in plan.kept_channels],
            macs_before=site.macs,
            macs_after=kept_macs(site.macs, m * live, c_in * c_out),
            params_before=c_out * c_in * math.prod(kernel) + (c_out if site.bias is not None else 0),
            params_after=live * m * math.prod(kernel) + bias,
            pruned_energy=round(plan.pruned_energy, 6),
            candidates={str(g): round(e, 6) for g, e in sorted(plan.candidates.items())},
            dense_us=None if plan.dense_time is None else round(plan.dense_time * 1e6, 1),
            candidate_us={str(g): round(t * 1e6, 1) for g, t in sorted(plan.times.items())},
            dead_filters=list(dead_filters),
            compensation=compensation,
            bias_delta=None if plan.bias_delta is None else list(plan.bias_delta),
            budget=budget,
        )


@dataclass
class Report:
    options: dict[str, Any]
    input_shapes: dict[str, list[int]]
    layers: list[LayerReport]
    skipped: list[Skip]
    totals: dict[str, Any]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    validation: Optional[Validation] = None
    fidelity: Optional[dict[str, dict[str, Any]]] = None  # per output, on the held-out samples
    samples: Optional[dict[str, Any]] = None  # the fit / held-out split of the calibration samples
    search: list[dict[str, float]] = dataclasses.field(default_factory=list)  # --keep: allowances measured
    quantization: Optional[dict[str, Any]] = (
        None  # --quantize: the types, INT8 alone and the fp32 pruned model compared
    )
    plan: Optional[Plan] = None  # what was applied: ``apply(model, Plan.from_dict(report["plan"]))`` redoes it
    calibration_checks: Optional[list[CalibrationCheck]] = None  # what the data failed; None without data

    def to_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "input_shapes": self.input_shapes,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "skipped": [dataclasses.asdict(skip) for skip in self.skipped],
            "totals": self.totals,
            "timings_s": self.timings,
            "fidelity": self.fidelity,
            "samples": self.samples,
            "search": self.search,
            "quantization": self.quantization,
            "validation": None if self.validation is None else dataclasses.asdict(self.validation),
            "plan": None if self.plan is None else self.plan.to_dict(),
            "calibration_checks": None
            if self.calibration_checks is None
            else [dataclasses.asdict(c) for c in self.calibration_checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        """Per-layer table: one row per pruned Conv, then the skipped ones with their reasons."""
        rows = [("node", "weight", "G", "kept/group", "MACs before", "MACs after", "pruned energy", "us dense -> G")]
        for layer in self.layers:
            rows.append(
                (
                    layer.node or f"#{layer.node_index}",
                    "x".join(map(str, layer.weight_shape)),
                    str(layer.groups),
                    f"{layer.kept_per_group}/{layer.weight_shape[1]}",
                    _count(layer.macs_before),
                    _count(layer.macs_after),
                    f"{layer.pruned_energy:.3f}",
                    ""
                    if layer.dense_us is None
                    else f"{layer.dense_us:.0f} -> {layer.candidate_us[str(layer.groups)]:.0f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows] if self.layers else []
        return "\n".join(lines + _skipped_lines(self.skipped))

    def summary(self) -> str:
        t = self.totals
        lines = [
            self.fidelity_line(),
            f"pruned {t['pruned_layers']} Conv, skipped {t['skipped_layers']}, added {t['gathers_added']} Gather; "
            f"bias compensated in {t['compensated_layers']} of {t['pruned_layers']}",
            f"Conv MACs {_count(t['conv_macs_before'])} -> {_count(t['conv_macs_after'])} "
            f"({_ratio(t['conv_macs_after'], t['conv_macs_before'])}); "
            f"params {_count(t['params_before'])} -> {_count(t['params_after'])} "
            f"({_ratio(t['params_after'], t['params_before'])})",
        ]
        if not t["pruned_layers"]:
            lines.append(
                "nothing was pruned: "
                + (
                    "no Conv could be (reasons above)"
                    if t["skipped_layers"]
                    else "the model has no Conv outside If/Loop branches (those are not pruned)"
                )
            )
        macs_goal, time_goal = self.options.get("target_macs"), self.options.get("target_latency")
        if macs_goal is not None and t["conv_macs_before"]:
            lines.append(
                f"target: remove {macs_goal:.1%} of the Conv MACs; removed "
                f"{1 - t['conv_macs_after'] / t['conv_macs_before']:.1%}"
            )
        v = self.validation
        if time_goal is not None:
            got = (
                ""
                if v is None or not v.latency_ms
                else f"; measured {v.latency_ms['pruned'] / v.latency_ms['original']:.2f}"
            )
            lines.append(f"target: at most {time_goal:.2f} of the original's time{got}")
        if v is None:
            lines.append("validation: skipped (--no-validate)")
            return "\n".join(lines)
        verdict = "passed" if v.passed else "FAILED"
        lines.append(
            f"exactness {verdict}: max |pruned - masked reference| = {v.masked_max_abs_diff:.3g} "
            f"(relative {v.masked_max_rel_diff:.3g}, tolerance {v.rtol:g}) on {v.inputs}"
        )
        if v.latency_ms:
            o, p = v.latency_ms["original"], v.latency_ms["pruned"]
            threads = self.options.get("threads", 1)
            speed = f"speed-up {o / p:.2f}x" if t["pruned_layers"] else "nothing pruned, the difference is noise"
            lines.append(
                f"median latency (onnxruntime {v.onnxruntime}, {threads} thread(s)): original {o:.3f} ms, "
                f"pruned {p:.3f} ms, {speed}"
            )
            if p > o and t["pruned_layers"]:
                lines.append(
                    "warning: the pruned model measured slower than the original end to end; "
                    "try a larger --ratio, or --include the large layers only"
                )
        elif v.latency_note:
            lines.append(f"median latency: {v.latency_note}")
        return "\n".join(lines + self.int8_lines())

    def int8_lines(self) -> list[str]:
        """What quantizing added, next to what INT8 alone gives (``--quantize``)."""
        q = self.quantization
        if q is None:
            return []
        lines = [
            f"INT8 ({q['types']}, {q['chosen']}): the original quantized alone keeps "
            + "; ".join(f"{name} {_figures(f)}" for name, f in q["fidelity_int8_alone"].items())
        ]
        ms = q["latency_ms"]
        if ms:
            threads = self.options.get("threads", 1)
            lines.append(
                f"median latency (onnxruntime, {threads} thread(s)): original {ms['original']:.3f} ms, INT8 alone "
                f"{ms['int8 alone']:.3f} ms, pruned {ms['pruned']:.3f} ms, pruned + INT8 {ms['pruned int8']:.3f} ms: "
                f"{ms['original'] / ms['pruned int8']:.2f}x over the original, "
                f"{ms['int8 alone'] / ms['pruned int8']:.2f}x over INT8 alone"
            )
            if ms["pruned int8"] > ms["pruned"]:
                lines.append(
                    f"warning: here the INT8 model runs slower than the pruned fp32 one ({ms['pruned int8']:.3f} ms "
                    f"against {ms['pruned']:.3f} ms): without --quantize the pass writes the faster model"
                )
        return lines

    def fidelity_line(self) -> str:
        """The headline: what the pruned model still does on held-out real inputs, or that it
        was not measured."""
        if self.fidelity is None:
            return (
                "fidelity: NOT measured (no real inputs); give --calibration with a few hundred of the "
                "model's own inputs to measure it and to refit the pruned layers"
            )
        held = (self.samples or {}).get("held_out")
        keep = self.options.get("keep")
        score = model_score(self.fidelity)
        missed = keep is not None and score is not None and score < keep
        goal = (
            "" if keep is None else f" (target: keep {keep:g}{', MISSED: ' + format(score, '.4g') if missed else ''})"
        )
        model = "" if self.quantization is None else " of the INT8 model"
        return f"fidelity{model} on {held} held-out samples{goal}: {self.fidelity_figures()}{self._too_few(keep, held)}"

    def _too_few(self, keep: Optional[float], held: Optional[int]) -> str:
        """Where an agreement target asks more than the held-out samples can show, even all agreeing."""
        rates = [f for f in (self.fidelity or {}).values() if f.get("metric") in ("top1", "top5")]
        need = 0 if keep is None or not rates or held is None else samples_to_show(keep)
        if need <= held:  # type: ignore[operator]
            return ""
        return (
            f"; {held} held-out samples cannot show {keep:g} even when all agree "
            f"(95% lower bound {wilson(held, held)[0]:.3f}): give at least {held_in(need)} calibration samples"
        )

    def fidelity_figures(self) -> str:
        """Every output's figures on the held-out samples, its target metric first (empty when
        fidelity was not measured)."""
        return "; ".join(f"{name} {_figures(f)}" for name, f in (self.fidelity or {}).items())


def _figures(f: dict[str, Any]) -> str:
    """One output's figures, its target metric first."""
    names = {
        "top1": "top-1 agreement",
        "top5": "top-5 agreement",
        "kl": "KL",
        "cosine": "cosine",
        "relative_l2": "relative L2 error",
        "snr_db": "SNR dB",
        "match": "equal elements",
    }
    order = {"classes": ("top1", "top5", "kl"), "dense": ("cosine", "snr_db", "relative_l2"), "exact": ("match",)}[
        f["kind"]
    ]
    shown = [f["metric"]] + [m for m in order if m != f["metric"]] if f["metric"] in order else list(order)
    interval = f.get("interval")
    figures = [f"{names[m]} {f[m]:.4g}" for m in shown]
    if interval and f["metric"] in order:
        figures[0] += f" (95%: {interval[0]:.4g}-{interval[1]:.4g})"
    return ", ".join(figures)


GROUPED = 3  # Convs left whole for one reason from which the table gives them one line


def _skipped_lines(skipped: Sequence[Skip]) -> list[str]:
    """One line per Conv left whole, or one for each reason shared by ``GROUPED`` or more (the
    measured figures in brackets set aside; the report keeps every Conv's own)."""
    groups: dict[tuple[str, str], list[Skip]] = {}
    for skip in skipped:
        if not skip.dead_filters:
            groups.setdefault((skip.op_type, skip.reason.split(" (")[0]), []).append(skip)
    lines = []
    for skip in skipped:
        key = (skip.op_type, skip.reason.split(" (")[0])
        group = [] if skip.dead_filters else groups[key]
        if len(group) >= GROUPED:
            if skip is group[0]:
                names = ", ".join(s.node or f"#{s.node_index}" for s in group[:2])
                lines.append(f"skipped {len(group)} {key[0]}: {key[1]}: {names} and {len(group) - 2} more")
            continue
        lines.append(
            f"skipped {skip.node or f'#{skip.node_index}'} ({skip.op_type}): {skip.reason}"
            + (f"; still stops computing {len(skip.dead_filters)} unread filters" if skip.dead_filters else "")
        )
    return lines


def totals(
    layers: Sequence[LayerReport], skipped: Sequence[Skip], params_before: int, params_after: int, gathers: int
) -> dict[str, Any]:
    """Whole-model figures: Conv MACs (None if some Conv shape is unknown) and parameters."""
    before = [l.macs_before for l in layers] + [s.macs for s in skipped if s.op_type == "Conv"]
    after = [l.macs_after for l in layers] + [
        s.macs if s.macs_after is None else s.macs_after for s in skipped if s.op_type == "Conv"
    ]
    known = all(m is not None for m in before)
    return {
        "pruned_layers": len(layers),
        "skipped_layers": len(skipped),
        "gathers_added": gathers,
        "compensated_layers": sum(l.bias_delta is not None for l in layers),
        "conv_macs_before": sum(before) if known else None,
        "conv_macs_after": sum(after) if known else None,
        "params_before": params_before,
        "params_after": params_after,
    }


def _count(value: Optional[int]) -> str:
    if value is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def _ratio(after: Optional[int], before: Optional[int]) -> str:
    return "?" if not before or after is None else f"{after / before:.1%}"
