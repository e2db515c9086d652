"""The whole-model plan: plain data that a rewrite turns into the pruned model, and JSON that turns back.

A :class:`Plan` says, per pruned Conv (by node index in the input model's ``graph.node``), its
:class:`~onnx_gkp.layer.planner.LayerPlan` (filter groups, kept channels, data-free
``bias_delta``) and, where calibration refitted it, the refitted kept weights and bias; which
prunable Convs are left whole; which filters the Convs feeding a ``G = 1`` layer still compute
(``trims.Trim``: the others nobody reads, so MACs and params follow from the plan alone); the
analysis options that name the prunable Convs; and, for the record, the end-to-end
measurements that chose it (the guard level, a latency target's saving, the INT8 types: the
cost table remembers them too, so that a rerun with it gives the same bytes).
:func:`onnx_gkp.apply` needs nothing else, so a plan written in the JSON report can be reviewed
and applied again (``python -m onnx_gkp IN OUT --apply report.json``), giving the same bytes.
Arrays travel as base64 of their raw bytes, so nothing is rounded on the way.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..analyse.sites import ConvSite
from ..errors import GkpError
from ..layer.planner import LayerPlan
from .trims import Trim

FORMAT = "onnx_gkp plan 1"

Pairs = list[tuple[ConvSite, LayerPlan]]  # the sites a policy prunes, each with its layer plan


@dataclass(frozen=True)
class PlannedLayer:
    """One pruned Conv; ``weight`` / ``bias`` are the refitted ones where calibration refitted it
    (only the kept kernels are meaningful: the pruned ones are zero), else None."""

    node_index: int
    plan: LayerPlan
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Plan:
    """Everything a rewrite needs; ``model`` is the digest of the model it was made for."""

    model: str
    layers: tuple[PlannedLayer, ...]
    whole: tuple[int, ...]
    analysis: dict[str, Any] = field(default_factory=dict)  # include, exclude, min_in_channels, test_shapes
    trims: dict[int, Trim] = field(
        default_factory=dict
    )  # per source Conv (and depthwise Conv of its chain): what it computes
    decisions: dict[str, Any] = field(default_factory=dict)  # end-to-end measurements that chose it (for the record)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "analysis": self.analysis,
            "whole": list(self.whole),
            "layers": [_layer_dict(layer) for layer in self.layers],
            "trims": {
                str(node): {"kept": list(t.kept), "filters": t.filters} for node, t in sorted(self.trims.items())
            },
            "decisions": self.decisions,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        """The plan of a JSON report (its ``plan``) or of a bare plan; refuses anything else."""
        if isinstance(data, dict) and "plan" in data and isinstance(data["plan"], dict):
            data = data["plan"]
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GkpError(f"not a pruning plan: expected a report or plan with format {FORMAT!r}")
        try:
            layers = tuple(_layer(item) for item in data["layers"])
            analysis = dict(data["analysis"])
            if analysis.get("test_shapes") is not None:
                analysis["test_shapes"] = {str(k): tuple(int(d) for d in v) for k, v in analysis["test_shapes"].items()}
            trims = {
                int(node): Trim(tuple(int(k) for k in t["kept"]), int(t["filters"]))
                for node, t in data["trims"].items()
            }
            return cls(
                str(data["model"]),
                layers,
                tuple(int(i) for i in data["whole"]),
                analysis,
                trims,
                dict(data.get("decisions") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise GkpError(f"the plan is damaged: {type(error).__name__}: {error}") from None


def _layer_dict(layer: PlannedLayer) -> dict[str, Any]:
    plan = layer.plan
    found: dict[str, Any] = {
        "node_index": layer.node_index,
        "filter_groups": [list(g) for g in plan.filter_groups],
        "kept_channels": [list(k) for k in plan.kept_channels],
        "bias_delta": None if plan.bias_delta is None else list(plan.bias_delta),
        "declined_refit": plan.declined_refit,
    }
    if layer.weight is not None:
        found["weight_shape"] = list(layer.weight.shape)
        found["refitted_kept_weight"] = _array_dict(plan.grouped_weight(layer.weight))
        found["refitted_bias"] = None if layer.bias is None else _array_dict(layer.bias)
    return found


def _layer(item: dict[str, Any]) -> PlannedLayer:
    delta = item["bias_delta"]
    plan = LayerPlan(
        filter_groups=tuple(tuple(int(f) for f in g) for g in item["filter_groups"]),
        kept_channels=tuple(tuple(int(c) for c in k) for k in item["kept_channels"]),
        bias_delta=None if delta is None else tuple(float(d) for d in delta),
        declined_refit=item.get("declined_refit"),
    )
    if len({len(k) for k in plan.kept_channels}) != 1 or len(plan.kept_channels) != len(plan.filter_groups):
        raise ValueError(f"layer {item['node_index']}: groups of unequal size")
    weight, bias = None, None
    if item.get("refitted_kept_weight") is not None:
        kept = _array(item["refitted_kept_weight"])
        weight = _scattered(plan, kept, [int(d) for d in item["weight_shape"]])
        bias = None if item.get("refitted_bias") is None else _array(item["refitted_bias"])
    return PlannedLayer(int(item["node_index"]), plan, weight, bias)


def _scattered(plan: LayerPlan, kept: np.ndarray, shape: list[int]) -> np.ndarray:
    """The weight of ``shape`` holding ``kept`` (``LayerPlan.grouped_weight`` layout) and zeros
    elsewhere: the rewrite and the masked reference read the kept kernels only."""
    order = plan.filter_order
    rows = np.repeat(np.arange(plan.groups), order.size // plan.groups)
    channels = np.asarray(plan.kept_channels, dtype=np.int64)[rows]
    if kept.shape != (order.size, plan.kept_per_group, *shape[2:]) or shape[0] != order.size:
        raise ValueError(f"refitted weight of shape {list(kept.shape)} does not fit {shape}")
    weight = np.zeros(shape, dtype=kept.dtype)
    weight[order[:, None], channels] = kept
    return weight


def _array_dict(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode()}


def _array(item: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(item["dtype"])
    if dtype.kind != "f":
        raise ValueError(f"refitted weights are floating point, not {dtype}")
    raw = base64.b64decode(item["base64"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape([int(d) for d in item["shape"]]).copy()
