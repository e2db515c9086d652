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

    def __init__(
        self, filter_groups: Sequence[Sequence[int]], kept_channels: Sequence[Sequence[int]], c_in: int, taps: int
    ) -> None:
        self.filter_groups = [np.asarray(g, dtype=np.int64) for g in filter_groups]
        self.kept_channels = [np.asarray(k, dtype=np.int64) for k in kept_channels]
        self.taps = taps
        size = c_in * taps + 1
        c_out = sum(len(g) for g in self.filter_groups)
        self.gram = np.zeros((size, size))
        self.cross = np.zeros((size, c_out))
        self.energy = np.zeros(c_out)  # sum of the squared targets, per filter
        self.rows = 0

    def add(self, patch: np.ndarray, target: np.ndarray) -> None:
        """``patch`` ``[P, C_in, taps]`` (pruned network's input), ``target`` ``[P, C_out]`` (original output).

        Overflowing activations make the sums infinite or NaN, silently: :meth:`solve` then
        returns non-finite weights, which the caller refuses."""
        design = np.hstack([patch.reshape(patch.shape[0], -1).astype(np.float64), np.ones((patch.shape[0], 1))])
        target = target.astype(np.float64)
        with np.errstate(all="ignore"):
            self.gram += design.T @ design
            self.cross += design.T @ target
            self.energy += np.sum(np.square(target), axis=0)
        self.rows += patch.shape[0]

    def select(self, keep: int, damping: float) -> list[np.ndarray]:
        """Each group's ``keep`` input channels that reconstruct its filters' outputs best.

        Backward elimination as in Optimal Brain Surgeon, by channel (a block of ``taps`` rows):
        with ``H`` the inverse of the damped Gram matrix of the channels still in and ``W = H c``
        their least-squares weights, taking out channel ``b`` and refitting the rest raises the
        squared error by exactly ``tr(W_b^T (H_bb)^-1 W_b)``; the cheapest channels go, ``H`` and
        ``W`` are downdated in place, and so on until ``keep`` remain (a few at a time on wide
        layers: at most about 32 downdates per group). The bias column never goes.
        """
        found = []
        c_in, taps = (self.gram.shape[0] - 1) // self.taps, self.taps
        everything = np.arange(c_in)
        for filters in self.filter_groups:
            columns = self._columns(everything)
            gram = self.gram[np.ix_(columns, columns)]
            size = gram.shape[0]
            penalty = damping * max(float(np.trace(gram[:-1, :-1])) / max(size - 1, 1), 1e-12)
            with np.errstate(all="ignore"):
                try:
                    inverse = np.linalg.inv(gram + np.diag(np.r_[np.full(size - 1, penalty), 0.0]))
                except np.linalg.LinAlgError:
                    found.append(np.sort(everything[:keep]))
                    continue
            if not np.isfinite(inverse).all():
                found.append(np.sort(everything[:keep]))
                continue
            weights = inverse @ self.cross[np.ix_(columns, filters)]
            alive = list(everything)
            while len(alive) > keep:
                blocks = np.arange(len(alive) * taps).reshape(len(alive), taps)
                h_bb = inverse[blocks[:, :, None], blocks[:, None, :]]  # [channels, taps, taps]
                w_b = weights[blocks]  # [channels, taps, filters]
                cost = np.einsum("bti,btj,bji->b", w_b, np.linalg.pinv(h_bb), w_b)
                step = max(1, min(len(alive) - keep, len(alive) // 32))
                out = np.sort(np.argsort(cost, kind="stable")[:step])
                gone = blocks[out].ravel()
                stay = np.setdiff1d(np.arange(inverse.shape[0]), gone)
                link = inverse[np.ix_(stay, gone)] @ np.linalg.pinv(inverse[np.ix_(gone, gone)])
                weights = weights[stay] - link @ weights[gone]
                inverse = inverse[np.ix_(stay, stay)] - link @ inverse[np.ix_(gone, stay)]
                alive = [c for i, c in enumerate(alive) if i not in set(out.tolist())]
            found.append(np.asarray(alive, dtype=np.int64))
        self.kept_channels = found
        return found

    def _columns(self, kept: np.ndarray) -> np.ndarray:
        """Rows and columns of the Gram matrix a group reads: its kept channels' taps, then the bias."""
        return np.r_[(kept[:, None] * self.taps + np.arange(self.taps)).ravel(), self.gram.shape[0] - 1]

    def fit_errors(
        self, weight_a: np.ndarray, bias_a: np.ndarray, weight_b: np.ndarray, bias_b: np.ndarray
    ) -> tuple[float, float]:
        """Squared residuals ``sum ||Y - (P W + b)||^2`` over the accumulated rows of two weights
        (their kept kernels: the pruned layer computes no others), read off the Gram matrices
        without another pass over the data: ``err(w) = w^T G w - 2 w^T c + ||y||^2`` per filter.
        The second is the first plus the exact difference ``(b - a)^T (G (b + a) - 2 c)``, so the
        comparison does not lose the constant's digits."""
        first = change = 0.0
        with np.errstate(all="ignore"):
            for filters, kept in zip(self.filter_groups, self.kept_channels):
                columns = self._columns(kept)
                gram = self.gram[np.ix_(columns, columns)]
                cross = self.cross[np.ix_(columns, filters)]
                a, b = (
                    np.vstack(
                        [w[filters][:, kept].reshape(len(filters), -1).T, np.asarray(v, np.float64)[filters][None]]
                    ).astype(np.float64)
                    for w, v in ((weight_a, bias_a), (weight_b, bias_b))
                )
                first += float(np.sum(a * (gram @ a)) - 2 * np.sum(a * cross) + np.sum(self.energy[filters]))
                change += float(np.sum((b - a) * (gram @ (b + a))) - 2 * np.sum((b - a) * cross))
        return first, first + change

    def solve(self, weight: np.ndarray, bias: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
        """New ``(weight, bias)``: kept kernels and biases refitted, pruned kernels zero.

        ``damping`` scales the ridge term relative to the mean diagonal of each group's Gram
        matrix (the bias is not penalised), so it does not depend on the activations' scale.
        """
        new_weight = np.zeros(weight.shape, dtype=np.float64)
        new_bias = np.asarray(bias, dtype=np.float64).copy()
        kernel = weight.shape[2:]
        for filters, kept in zip(self.filter_groups, self.kept_channels):
            columns = self._columns(kept)
            gram = self.gram[np.ix_(columns, columns)]
            size = gram.shape[0]
            with np.errstate(all="ignore"):  # non-finite sums give non-finite weights (see add)
                penalty = damping * max(float(np.trace(gram[:-1, :-1])) / max(size - 1, 1), 1e-12)
                try:
                    solution = np.linalg.solve(
                        gram + np.diag(np.r_[np.full(size - 1, penalty), 0.0]), self.cross[np.ix_(columns, filters)]
                    )
                except np.linalg.LinAlgError:  # singular: no refit for this group
                    solution = np.full((size, len(filters)), np.nan)
            new_weight[filters[:, None], kept[None, :]] = solution[:-1].T.reshape(len(filters), len(kept), *kernel)
            new_bias[filters] = solution[-1]
        with np.errstate(all="ignore"):  # past the weight's dtype: infinite, and refused by the caller
            return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)
