"""The budget's quality cost of one layer's candidate: its relative output error, weighted.

For a Conv ``y = W x`` with input channels of second moment ``s_c = E[x_c^2]`` (from BN
statistics, ``bn_stats.py``, or measured on calibration inputs; 1 where unknown) taken as
independent, pruning the kernels ``(f, c)`` outside the mask changes the output by an
expected energy ``sum over pruned (f, c) of ||W[f, c]||^2 s_c``. Divided by the output's
expected energy under the same assumption this is the layer's *relative error*: 0 when
nothing is pruned, 1 when everything is. It is comparable across kept counts and group
counts of one layer; multiplied by the layer's error gain (``gains.py``, how much of it
the rest of the network sees) it is comparable across layers, and additive is what the
budget assumes.

Checked against the measured one-layer-at-a-time sensitivity (``tools/sensitivity.py``):
Spearman rank correlation 0.88 on ImageNet MobileNetV2 and 0.47 on the bundled ResNet at
ratio 0.25, ``G = 1`` (``docs/method.md``). Plain numpy.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def weighted_energy(energy: np.ndarray, second_moment: Optional[np.ndarray]) -> np.ndarray:
    """``||W[f, c]||^2 * E[x_c^2]`` as ``[C_out, C_in]``; unweighted where the moments are unknown."""
    return energy if second_moment is None else energy * np.asarray(second_moment, dtype=np.float64)[None, :]


def relative_errors(
    weighted: np.ndarray, groups: Sequence[np.ndarray], scores: Sequence[np.ndarray], keeps: Sequence[int]
) -> np.ndarray:
    """Relative error of keeping, in each filter group, its ``keep`` best-scored channels, for
    every ``keep`` in ``keeps`` at once (the channel choice of ``kernels.select_channels``)."""
    total = float(weighted.sum())
    if total <= 0:
        return np.zeros(len(keeps))
    index = np.asarray(keeps, dtype=np.int64)
    kept = np.zeros(len(index))
    for members, score in zip(groups, scores):
        order = np.argsort(-np.asarray(score), kind="stable")
        per_channel = weighted[np.asarray(members)][:, order].sum(axis=0)
        kept += np.concatenate([[0.0], np.cumsum(per_channel)])[index]
    return np.clip(1.0 - kept / total, 0.0, 1.0)


def relative_error(weighted: np.ndarray, keep_mask: np.ndarray) -> float:
    """Relative error of one plan's mask (``LayerPlan.keep_mask``)."""
    total = float(weighted.sum())
    return float(weighted[~keep_mask].sum()) / total if total > 0 else 0.0
