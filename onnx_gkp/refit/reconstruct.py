"""Reconstruction from calibration inputs: refit each pruned layer's kept weights, in graph order.

For every pruned Conv, the original model gives the target (the layer's dense output) and the
model pruned so far gives the input as the pruned network will see it (earlier layers already
reconstructed, in masked form); ``ridge.py`` solves the per-group ridge problems. The
result is new weights and biases for the sites: the rewrite and the masked reference are then
built from them, so validation still checks the dense rewrite exactly.

Bounded: ``chunk`` samples at a time through onnxruntime, ``positions`` sampled output
positions per sample, and per layer one Gram matrix of side ``C_in * prod(kernel) + 1`` (4609
for a 3x3 Conv over 512 channels: 170 MB).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..analyse.sites import ConvSite
from ..check.reference import masked_reference
from ..layer.compensation import explicit_pads
from ..layer.planner import LayerPlan, kernel_energy
from ..runtime.sessions import batch_size, chunks, run, up_to
from .activations import calibration_session
from .ridge import GroupedRidge, patches, sample_positions


@dataclass(frozen=True)
class Fit:
    """How a refit samples and solves: ``positions`` sampled output positions per sample, fed in
    batches of ``chunk``, ridge ``damping`` relative to the Gram matrix's mean diagonal, and with
    ``select`` the kept channels chosen anew by reconstruction (:meth:`GroupedRidge.select`)."""

    positions: int = 64
    chunk: int = 32
    damping: float = 1e-3
    select: bool = True


def refitted_alone(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    plans: Sequence[LayerPlan],
    data: dict[str, np.ndarray],
    *,
    threads: int = 1,
    seed: int = 0,
    fit: Fit = Fit(),
) -> list[tuple[ConvSite, LayerPlan]]:
    """Each site refitted on ``data`` to its plan (``G = 1``) with every other layer whole, as
    :func:`reconstructed` would refit it first: the kept channels chosen by reconstruction,
    weights and bias solved. A site's statistics are gathered once for all its plans (``sites``
    may repeat a site, one plan each); where a solve is not finite, the masked plan stays."""
    fit = replace(fit, chunk=batch_size(model, fit.chunk))
    found: list[tuple[ConvSite, LayerPlan]] = []
    ridges: dict[int, GroupedRidge] = {}
    for site, plan in zip(sites, plans):
        kernel = site.weight.shape[2:]
        if site.node_index not in ridges:
            node = model.graph.node[site.node_index]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            ridges[site.node_index] = ridge = GroupedRidge(
                [range(site.weight.shape[0])], [range(site.weight.shape[1])], site.weight.shape[1], int(np.prod(kernel))
            )
            sessions = (
                calibration_session(up_to(model, [node.output[0]]), threads),
                calibration_session(up_to(model, [node.input[0]]), threads),
            )
            _accumulate(ridge, sessions, attrs, kernel, data, fit, seed + 7919 * len(ridges))
        ridge = ridges[site.node_index]
        ridge.filter_groups = [np.asarray(g, dtype=np.int64) for g in plan.filter_groups]
        kept = tuple(tuple(int(c) for c in k) for k in ridge.select(plan.kept_per_group, fit.damping))
        bias = site.bias if site.bias is not None else np.zeros(site.weight.shape[0], site.weight.dtype)
        weight, bias = ridge.solve(site.weight, bias, fit.damping)
        if np.isfinite(weight).all() and np.isfinite(bias).all():
            found.append((replace(site, weight=weight, bias=bias), replace(plan, kept_channels=kept)))
        else:
            found.append((site, plan))
    return found


def reconstructed(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    plans: Sequence[LayerPlan],
    data: dict[str, np.ndarray],
    *,
    fallback: Optional[Sequence[LayerPlan]] = None,
    threads: int = 1,
    seed: int = 0,
    fit: Fit = Fit(),
) -> list[tuple[ConvSite, LayerPlan]]:
    """``sites`` (in graph order) with kept weights and biases refitted on ``data``, and their plans.

    With ``fit.select`` (the default) each group's kept channels are chosen anew, as the ones whose
    refit reconstructs the layer's output best (:meth:`GroupedRidge.select`), instead of by
    weight energy; the groups of filters, their number and the kept count stay the plan's.

    A refit is bounded by what it replaces: where its weights are not finite (activations that
    overflow, a singular fit) or it fits ``data`` worse than the masked weights with the
    ``fallback`` plan's data-free compensation (``plans`` where none is given), the layer keeps
    its site and the fallback plan, whose ``declined_refit`` says why; later layers are fitted
    to the network as it then is.
    """
    fit = replace(fit, chunk=batch_size(model, fit.chunk))
    done: list[ConvSite] = []
    chosen: list[LayerPlan] = []
    for index, (site, plan) in enumerate(zip(sites, plans)):
        node = model.graph.node[site.node_index]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        target = calibration_session(up_to(model, [node.output[0]]), threads)
        current = masked_reference(model, done, chosen)
        source = calibration_session(up_to(current, [node.input[0]]), threads)
        kernel = site.weight.shape[2:]
        ridge = GroupedRidge(plan.filter_groups, plan.kept_channels, site.weight.shape[1], int(np.prod(kernel)))
        _accumulate(ridge, (target, source), attrs, kernel, data, fit, seed + 7919 * index)
        if fit.select:
            kept = tuple(tuple(int(c) for c in k) for k in ridge.select(plan.kept_per_group, fit.damping))
            plan = replace(plan, kept_channels=kept, pruned_energy=_pruned_energy(site.weight, plan, kept))
        bias = site.bias if site.bias is not None else np.zeros(site.weight.shape[0], site.weight.dtype)
        weight, bias = ridge.solve(site.weight, bias, fit.damping)
        instead = plan if fallback is None else fallback[index]
        declined = _declined(ridge, site, instead, weight, bias)
        if declined is None:
            done.append(replace(site, weight=weight, bias=bias))
            chosen.append(plan)
        else:
            done.append(site)
            chosen.append(replace(instead, declined_refit=declined))
    return list(zip(done, chosen))


def _accumulate(
    ridge: GroupedRidge,
    sessions: tuple[ort.InferenceSession, ort.InferenceSession],
    attrs: dict,
    kernel: tuple,
    data: dict[str, np.ndarray],
    fit: Fit,
    seed: int,
) -> None:
    """Add to ``ridge`` the layer's input patches (from the ``source`` session) and its original
    outputs (from ``target``) at ``fit.positions`` sampled output positions of every sample of ``data``."""
    target, source = sessions
    for batch_index, batch in enumerate(chunks(data, fit.chunk)):
        y = run(target, batch)[0]
        x = run(source, batch)[0]
        strides, dilations, pads = explicit_pads(
            x.shape[2:],
            kernel,
            attrs.get("strides"),
            attrs.get("dilations"),
            attrs.get("pads"),
            attrs.get("auto_pad", b"NOTSET").decode() if isinstance(attrs.get("auto_pad"), bytes) else "NOTSET",
        )
        where = sample_positions(y.shape[2:], fit.positions, seed + batch_index)
        rows = patches(x, kernel, strides, dilations, pads, where)
        wanted = y.reshape(y.shape[0], y.shape[1], -1)[:, :, where].transpose(0, 2, 1).reshape(-1, y.shape[1])
        ridge.add(rows, wanted)


def _pruned_energy(weight: np.ndarray, plan: LayerPlan, kept: tuple[tuple[int, ...], ...]) -> float:
    """The share of the weight's energy in the kernels ``kept`` leaves out, for the report."""
    energy = kernel_energy(weight)
    mask = replace(plan, kept_channels=kept).keep_mask(weight.shape[1])
    total = float(energy.sum())
    return float(energy[~mask].sum()) / total if total > 0 else 0.0


def _declined(
    ridge: GroupedRidge, site: ConvSite, instead: LayerPlan, weight: np.ndarray, bias: np.ndarray
) -> Optional[str]:
    """Why the refit ``(weight, bias)`` must not replace the masked weights of ``instead``, or None."""
    taken = "calibration refit not taken"
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        return (
            f"{taken}: its weights are not finite (the calibration data overflow this layer's activations "
            f"or leave its fit singular); the masked weights are kept"
        )
    masked_bias = instead.compensated_bias(site.bias, site.weight.dtype)
    masked_bias = np.zeros(site.weight.shape[0]) if masked_bias is None else masked_bias
    before, after = ridge.fit_errors(instead.masked_weight(site.weight), masked_bias, weight, bias)
    if not (np.isfinite(before) and np.isfinite(after)):
        return f"{taken}: its error on the calibration data overflows; the masked weights are kept"
    if after - before > 1e-9 * abs(before):
        scale = max(float(np.sum(ridge.energy)), 1e-300)
        return (
            f"{taken}: it fits the calibration data worse (relative error {after / scale:.3g}) than the masked "
            f"weights ({before / scale:.3g}); the masked weights are kept"
        )
    return None
