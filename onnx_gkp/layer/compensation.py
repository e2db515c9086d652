"""Data-free bias compensation: keep each pruned filter's output mean.

A pruned kernel ``W[f, c]`` stops adding ``sum_k W[f, c, k] x_c(p + k)`` to output ``f`` at
position ``p``. Where the mean ``E[x_c]`` is known without data, adding its expected value to
the bias keeps the layer's output mean. Zero padding is part of that expectation: near a
border some taps read padding, not ``x_c``, so the expected contribution at ``p`` is
``E[x_c] * sum_k W[f, c, k] [tap k inside the input at p]``. A bias is one number per filter,
so we use the mean of that over all output positions (the constant closest to it in the least
squares sense): each tap is weighted by the fraction of output positions where it lands inside
the input (:func:`tap_coverage`). For a 1x1 Conv without padding every fraction is 1.

Plain numpy: nothing here knows about ONNX.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def _axis_coverage(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> np.ndarray:
    """Per tap of one spatial axis: the fraction of output positions where it reads the input."""
    outputs = (size + pad_begin + pad_end - (kernel - 1) * dilation - 1) // stride + 1
    starts = np.arange(max(outputs, 0)) * stride - pad_begin
    taps = starts[None, :] + np.arange(kernel)[:, None] * dilation
    inside = (taps >= 0) & (taps < size)
    return inside.mean(axis=1) if outputs > 0 else np.ones(kernel)


def explicit_pads(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Optional[Sequence[int]] = None,
    dilations: Optional[Sequence[int]] = None,
    pads: Optional[Sequence[int]] = None,
    auto_pad: str = "NOTSET",
) -> tuple[list[int], list[int], list[int]]:
    """``(strides, dilations, pads)`` with defaults filled in and ``auto_pad`` made explicit.

    Arguments as a Conv's attributes: ``pads`` is ``[begin_0, begin_1, ..., end_0, end_1, ...]``,
    ``auto_pad`` (``SAME_UPPER``/``SAME_LOWER``/``VALID``) overrides it.
    """
    rank = len(kernel)
    strides = [int(s) for s in strides or [1] * rank]
    dilations = [int(d) for d in dilations or [1] * rank]
    pads = [int(p) for p in pads or [0] * (2 * rank)]
    if auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for axis in range(rank):
            out = -(-int(spatial[axis]) // strides[axis])
            total = max((out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - int(spatial[axis]), 0)
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + rank] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    return strides, dilations, pads


def tap_coverage(spatial: Sequence[int], kernel: Sequence[int], *attributes: Any, **named: Any) -> np.ndarray:
    """Fraction of output positions where each kernel tap reads the input (not padding).

    Arguments as in :func:`explicit_pads`. Shape = ``kernel``.
    """
    rank = len(kernel)
    strides, dilations, pads = explicit_pads(spatial, kernel, *attributes, **named)
    coverage = np.ones((), dtype=np.float64)
    for axis in range(rank):
        per_axis = _axis_coverage(
            int(spatial[axis]),
            int(kernel[axis]),
            strides[axis],
            dilations[axis],
            pads[axis],
            pads[axis + rank],
        )
        coverage = np.multiply.outer(coverage, per_axis)
    return coverage


def bias_delta(weight: np.ndarray, keep_mask: np.ndarray, input_mean: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``delta[f] = sum over pruned c of E[x_c] * sum_k W[f, c, k] * coverage[k]`` (float64)."""
    reach = (weight.astype(np.float64) * coverage).reshape(weight.shape[0], weight.shape[1], -1).sum(-1)
    return np.where(keep_mask, 0.0, reach) @ np.asarray(input_mean, dtype=np.float64)
