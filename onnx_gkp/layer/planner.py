"""Per-layer pruning plans: cluster filters, select grouped kernels, choose the group count.

A :class:`LayerPlan` is plain data: ``G`` lists of original filter indices (``filter_groups``,
concatenated = the new output order) and ``G`` sorted lists of kept input channels
(``kept_channels``), all of length ``m``. From them alone follow the dense rewrite

    in_index  = concat(K_1, ..., K_G)                    (input gather, G*m channels)
    W'[g*n + i, j] = W[S_g[i], K_g[j]]                   (Conv weight, group = G)
    out_index[f] = position of filter f in concat(S_g)   (output gather back to filter order)

and the masked reference (``W`` with ``W[f, c] = 0`` unless ``c`` is kept by ``f``'s group).
Plain numpy: nothing here knows about ONNX.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Literal, Optional, Union

import numpy as np

from .cluster import balanced_kmeans, refine_for_retention
from .group_count import candidate_counts, choose_group_count, fast_counts
from .kernels import CRITERIA, Criterion, grouped_kernels, kernel_scores, select_channels

Groups = Union[int, Literal["auto"]]


@dataclass(frozen=True)
class PlanOptions:
    """What the planner needs besides the weight; the CLI and the API build one."""

    ratio: float = 0.25
    groups: Groups = "auto"
    criterion: Criterion = "combined"
    max_groups: int = 16
    group_cost: float = 0.05
    seed: int = 0
    speed_slack: float = 0.05
    align: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.groups != "auto" and (not isinstance(self.groups, int) or self.groups < 1):
            raise ValueError(f"groups must be 'auto' or a positive integer, got {self.groups!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        if self.max_groups < 1:
            raise ValueError(f"max_groups must be positive, got {self.max_groups}")
        if not 0 <= self.group_cost < float("inf"):  # NaN fails every comparison
            raise ValueError(f"group_cost must be a finite number >= 0, got {self.group_cost}")
        if not 0 <= self.speed_slack < float("inf"):
            raise ValueError(f"speed_slack must be a finite number >= 0, got {self.speed_slack}")
        if not 1 <= self.align <= 256:
            raise ValueError(f"align must be between 1 and 256, got {self.align}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1, got {self.seed}")

    def refusal(self, c_out: int, c_in: int) -> Optional[str]:
        """Why a layer of this size cannot be planned with these options, or None."""
        if self.groups != "auto" and c_out % int(self.groups):
            return f"--groups {self.groups} does not divide C_out={c_out}"
        if self.kept(c_in) == c_in:
            aligned = (
                f" (kept counts are multiples of {self.align} here: --align)"
                if kept_count(c_in, self.ratio) < c_in
                else ""
            )
            return f"ratio {self.ratio} prunes no channel of {c_in}{aligned}"
        return None

    def kept(self, c_in: int, ratio: Optional[float] = None) -> int:
        """Kept channels per group at ``ratio`` (default: this ratio), aligned as :func:`kept_count`."""
        return kept_count(c_in, self.ratio if ratio is None else ratio, self.align)


@dataclass(frozen=True)
class LayerPlan:
    """How one Conv is regrouped; every derived index follows from the two lists."""

    filter_groups: tuple[tuple[int, ...], ...]
    kept_channels: tuple[tuple[int, ...], ...]
    pruned_energy: float = 0.0
    candidates: dict[int, float] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)
    dense_time: Optional[float] = None
    bias_delta: Optional[tuple[float, ...]] = None  # data-free compensation, original filter order
    declined_refit: Optional[str] = None  # why calibration's refit of this layer was not taken

    @property
    def groups(self) -> int:
        return len(self.filter_groups)

    @property
    def kept_per_group(self) -> int:
        return len(self.kept_channels[0])

    @property
    def filter_order(self) -> np.ndarray:
        """Original filter index of each new output channel."""
        return np.concatenate([np.asarray(g, dtype=np.int64) for g in self.filter_groups])

    @property
    def in_index(self) -> np.ndarray:
        """Input channels gathered in front of the grouped Conv (``G * m`` entries)."""
        return np.concatenate([np.asarray(k, dtype=np.int64) for k in self.kept_channels])

    def keep_mask(self, c_in: int) -> np.ndarray:
        """Boolean ``[C_out, C_in]``: True where kernel ``W[f, c]`` survives."""
        order = self.filter_order
        mask = np.zeros((order.size, c_in), dtype=bool)
        rows = np.repeat(np.arange(self.groups), order.size // self.groups)
        kept = np.asarray(self.kept_channels, dtype=np.int64)
        mask[order[:, None], kept[rows]] = True
        return mask

    def masked_weight(self, weight: np.ndarray) -> np.ndarray:
        """The original weight with every pruned kernel zeroed (the masked reference)."""
        mask = self.keep_mask(weight.shape[1]).reshape(weight.shape[:2] + (1,) * (weight.ndim - 2))
        return np.where(mask, weight, np.zeros((), dtype=weight.dtype))

    def grouped_weight(self, weight: np.ndarray) -> np.ndarray:
        """``W'[g*n + i, j] = W[S_g[i], K_g[j]]``, shape ``[C_out, m, *k]``."""
        order = self.filter_order
        rows = np.repeat(np.arange(self.groups), order.size // self.groups)
        kept = np.asarray(self.kept_channels, dtype=np.int64)
        return np.ascontiguousarray(weight[order[:, None], kept[rows]])

    def compensated_bias(self, bias: Optional[np.ndarray], dtype: np.dtype) -> Optional[np.ndarray]:
        """``bias + bias_delta`` in original filter order (None when there is neither)."""
        if self.bias_delta is None:
            return bias
        base = np.zeros(len(self.bias_delta)) if bias is None else bias.astype(np.float64)
        return (base + np.asarray(self.bias_delta)).astype(dtype)

    def permuted_bias(self, bias: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(bias[self.filter_order])


def kept_count(c_in: int, ratio: float, align: int = 1) -> int:
    """``m = round((1 - ratio) * C_in)``, at least 1; for layers of at least ``4 * align``
    channels, the nearest multiple of ``align`` instead (at least ``align``, at most ``C_in``).

    onnxruntime's fast Conv paths work on blocks of channels (16 floats with AVX-512, 8 with
    AVX2; its int8 GEMMs likewise): a kept count off the block is padded and can be slower than
    the dense layer (``docs/method.md``, "Aligned kept counts"). Small layers keep the exact
    count, where one block would be a quarter of the layer or more.
    """
    exact = (1.0 - ratio) * c_in
    if align > 1 and c_in >= 4 * align:
        return min(c_in, max(align, int(np.floor(exact / align + 0.5)) * align))
    return max(1, int(round(exact)))


def kernel_energy(weight: np.ndarray) -> np.ndarray:
    """``[C_out, C_in]`` matrix of kernel energies ``||W[f, c]||^2``."""
    return (weight.astype(np.float64) ** 2).reshape(weight.shape[0], weight.shape[1], -1).sum(-1)


def filter_features(energy: np.ndarray) -> np.ndarray:
    """Per-filter profile of where its energy sits over the input channels.

    Grouped-kernel pruning keeps, per group, the channels that carry most of its filters'
    energy, so filters are clustered by that profile, normalised per filter so a filter's
    overall scale does not decide its group.
    """
    return energy / np.maximum(energy.sum(axis=1, keepdims=True), 1e-30)


def group_scores(weight: np.ndarray, clusters: list[np.ndarray], options: PlanOptions) -> list[np.ndarray]:
    """Each filter group's grouped-kernel scores over the input channels (higher = keep)."""
    seed = (options.seed, zlib.crc32(weight.tobytes()))  # per layer, for the random criterion
    return [kernel_scores(grouped_kernels(weight, m), options.criterion, (*seed, i)) for i, m in enumerate(clusters)]


def plan_for_count(weight: np.ndarray, energy: np.ndarray, groups: int, keep: int, options: PlanOptions) -> LayerPlan:
    """Cluster into ``groups`` equal filter groups and keep ``keep`` channels in each.

    ``energy`` is ``kernel_energy(weight)``, computed once per layer by the caller.
    """
    clusters = balanced_kmeans(filter_features(energy), groups, seed=options.seed)
    clusters = refine_for_retention(energy, clusters, keep)
    kept = [select_channels(scores, keep) for scores in group_scores(weight, clusters, options)]
    plan = LayerPlan(
        filter_groups=tuple(tuple(int(f) for f in g) for g in clusters),
        kept_channels=tuple(tuple(int(c) for c in k) for k in kept),
    )
    total = float(energy.sum())
    pruned = float(energy[~plan.keep_mask(energy.shape[1])].sum()) / total if total > 0 else 0.0
    return replace(plan, pruned_energy=pruned, candidates={groups: pruned})


def plan_layer(
    weight: np.ndarray,
    options: PlanOptions,
    times: Optional[dict[int, float]] = None,
    dense_time: Optional[float] = None,
) -> Optional[LayerPlan]:
    """Plan one Conv weight ``[C_out, C_in, *k]``: the fixed ``G`` or the flexible choice.

    With measured ``times`` (seconds per candidate ``G``) and ``dense_time``, ``auto`` only
    considers the counts :func:`fast_counts` lets through, and returns None (leave the layer
    whole) when every candidate is slower than the dense Conv.
    """
    c_out, c_in = weight.shape[:2]
    keep = options.kept(c_in)
    energy = kernel_energy(weight)
    timing = {"times": dict(times or {}), "dense_time": dense_time}
    if options.groups != "auto":
        return replace(plan_for_count(weight, energy, int(options.groups), keep, options), **timing)
    counts = candidate_counts(c_out, options.max_groups)
    if times is not None and dense_time is not None:
        counts = fast_counts({g: times[g] for g in counts}, dense_time, options.speed_slack)
        if not counts:
            return None
    plans = {g: plan_for_count(weight, energy, g, keep, options) for g in counts}
    energies = {g: p.pruned_energy for g, p in plans.items()}
    return replace(plans[choose_group_count(energies, options.group_cost)], candidates=energies, **timing)
