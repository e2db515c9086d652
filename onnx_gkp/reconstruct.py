"""Least-squares reconstruction of a pruned layer's kept weights from calibration activations.

For a group ``g`` with filters ``S_g`` and kept channels ``K_g``, the kept weights and biases
solve the ridge problem

    min_{W, b}  sum_p || Y[p, S_g] - (P[p, K_g] W + b) ||^2  +  lam ||W||^2

where ``P[p, K_g]`` is the input patch at output position ``p`` restricted to the kept channels
(as the pruned network sees it) and ``Y`` the original layer's output there. Filters of one
group share their kept channels, hence one Gram matrix per group; groups are independent.
The sums over positions are accumulated chunk by chunk (:class:`GroupedRidge`), so memory is
bounded by one chunk's patches and one Gram matrix of side ``C_in * prod(k) + 1``.

Plain numpy: nothing here knows about ONNX.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def sample_positions(spatial: Sequence[int], count: int, seed: int) -> np.ndarray:
    """``count`` distinct flat output positions (all of them when there are fewer), sorted."""
    total = int(np.prod(spatial))
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def patches(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    positions: np.ndarray,
) -> np.ndarray:
    """Input patches ``[N * len(positions), C, prod(kernel)]`` at flat output ``positions``.

    ``x`` is ``[N, C, *spatial]``; ``pads`` as ONNX's ``[begin..., end...]``.
    """
    rank = len(kernel)
    width = [(0, 0), (0, 0)] + [(int(pads[a]), int(pads[a + rank])) for a in range(rank)]
    padded = np.pad(x, width)
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, reach, axis=tuple(range(2, 2 + rank)))
    # windows: [N, C, *window starts, *reach]; keep every stride-th start and dilation-th tap
    starts = tuple(slice(None, None, int(s)) for s in strides)
    taps = tuple(slice(None, None, int(d)) for d in dilations)
    windows = windows[(slice(None), slice(None)) + starts + taps]
    out_spatial = windows.shape[2 : 2 + rank]
    flat = windows.reshape(windows.shape[0], windows.shape[1], int(np.prod(out_spatial)), -1)
    picked = flat[:, :, positions]  # [N, C, P, taps]
    return np.ascontiguousarray(picked.transpose(0, 2, 1, 3)).reshape(-1, x.shape[1], int(np.prod(kernel)))


class GroupedRidge:
    """Accumulates the normal equations over chunks, then solves each group's ridge problem.

    Every group's Gram matrix is a submatrix of the one over all input channels, so that one
    is accumulated (side ``C_in * prod(k) + 1``) and the groups read their kept rows and columns
    from it: the cost of a chunk does not grow with ``G``.
    """

    def __init__(self, filter_groups: Sequence[Sequence[int]], kept_channels: Sequence[Sequence[int]], c_in: int, taps: int) -> None:
        self.filter_groups = [np.asarray(g, dtype=np.int64) for g in filter_groups]
        self.kept_channels = [np.asarray(k, dtype=np.int64) for k in kept_channels]
        self.taps = taps
        size = c_in * taps + 1
        c_out = sum(len(g) for g in self.filter_groups)
        self.gram = np.zeros((size, size))
        self.cross = np.zeros((size, c_out))
        self.rows = 0

    def add(self, patch: np.ndarray, target: np.ndarray) -> None:
        """``patch`` ``[P, C_in, taps]`` (pruned network's input), ``target`` ``[P, C_out]`` (original output)."""
        design = np.hstack([patch.reshape(patch.shape[0], -1).astype(np.float64), np.ones((patch.shape[0], 1))])
        self.gram += design.T @ design
        self.cross += design.T @ target.astype(np.float64)
        self.rows += patch.shape[0]

    def solve(self, weight: np.ndarray, bias: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
        """New ``(weight, bias)``: kept kernels and biases refitted, pruned kernels zero.

        ``damping`` scales the ridge term relative to the mean diagonal of each group's Gram
        matrix (the bias is not penalised), so it does not depend on the activations' scale.
        """
        new_weight = np.zeros(weight.shape, dtype=np.float64)
        new_bias = np.asarray(bias, dtype=np.float64).copy()
        kernel = weight.shape[2:]
        last = self.gram.shape[0] - 1
        for filters, kept in zip(self.filter_groups, self.kept_channels):
            columns = np.r_[(kept[:, None] * self.taps + np.arange(self.taps)).ravel(), last]
            gram = self.gram[np.ix_(columns, columns)]
            size = gram.shape[0]
            penalty = damping * max(float(np.trace(gram[:-1, :-1])) / max(size - 1, 1), 1e-12)
            solution = np.linalg.solve(gram + np.diag(np.r_[np.full(size - 1, penalty), 0.0]), self.cross[np.ix_(columns, filters)])
            new_weight[filters[:, None], kept[None, :]] = solution[:-1].T.reshape(len(filters), len(kept), *kernel)
            new_bias[filters] = solution[-1]
        return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)
