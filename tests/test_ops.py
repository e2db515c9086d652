"""The op registry: one table that analysis, rewrite, statistics and gains read alike."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

from onnx_gkp.analyse.expectation import activation
from onnx_gkp.analyse.ops import OPS, ChannelNode, channel_params, rule


def _node(op: str, *constants: Optional[np.ndarray], group: int = 1, outputs: int = 1) -> ChannelNode:
    """A node reading a carried tensor (input 0) and ``constants`` after it."""
    inputs = (None, *constants)
    return ChannelNode(op, outputs, group, tuple(True for _ in inputs), lambda i: inputs[i])


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_named_activation_has_moments(op: str) -> None:
    entry = OPS[op]
    names = [entry.activation] if entry.activation else []
    names += [entry.gate[1]] if entry.gate else []
    for name in names:
        assert activation(name, alpha=0.2, beta=0.5) is not None, name


def test_an_unknown_op_keeps_nothing() -> None:
    assert rule("Softmax") == rule("NoSuchOp")
    assert channel_params(_node("Softmax"), {0}, np.arange(3), 3, 4) is None


def test_pointwise_ignores_scalar_bounds_and_broadcast_takes_per_channel_constants() -> None:
    index = np.array([2, 0])
    assert channel_params(_node("Clip", np.array(0.0), np.array(6.0)), {0}, index, 3, 4) == ([], {})
    scale = np.arange(3.0).reshape(3, 1, 1)
    (changes, attrs) = channel_params(_node("Mul", scale), {0}, index, 3, 4)
    assert attrs == {} and changes[0][0] == 1 and changes[0][1].ravel().tolist() == [2.0, 0.0]
    assert channel_params(_node("Mul", np.ones((4, 1, 1))), {0}, index, 3, 4) is None  # another width


def test_depthwise_conv_keeps_its_filters_and_group_shrinks() -> None:
    weight, bias = np.arange(3.0).reshape(3, 1, 1, 1), np.arange(3.0)
    changes, attrs = channel_params(_node("Conv", weight, bias, group=3), {0}, np.array([1, 2]), 3, 4)
    assert attrs == {"group": 2} and [i for i, _ in changes] == [1, 2]
    assert channel_params(_node("Conv", np.ones((3, 2, 1, 1)), group=1), {0}, np.array([1]), 3, 4) is None


def test_batchnorm_with_other_outputs_or_wrong_width_is_not_crossed() -> None:
    params = [np.ones(3)] * 4
    assert channel_params(_node("BatchNormalization", *params), {0}, np.array([0]), 3, 4) is not None
    assert channel_params(_node("BatchNormalization", *params, outputs=3), {0}, np.array([0]), 3, 4) is None
    assert channel_params(_node("BatchNormalization", *[np.ones(2)] * 4), {0}, np.array([0]), 3, 4) is None
