"""One table of what each ONNX op does to channels: the rules analysis, rewrite, statistics and
error gains all read, so that they cannot disagree. Adding an op is one entry in :data:`OPS`.

Per op type (default domain), an :class:`Op` says:

* ``channels``: how output channel ``c`` depends on input channel ``c`` alone, given constant
  parameters, so that a permutation ``order`` or a trim to channels ``index`` crosses the node
  with its parameters taken alike (:func:`channel_params`, ``y[:, j] = f(x[:, index[j]])``):
  ``pointwise`` (inputs after the first are scalars: Clip's bounds), ``broadcast`` (every
  other input a constant broadcast per channel, or the carried tensor itself: Add, Mul, PRelu),
  ``pooled`` (no parameters), ``batchnorm`` (four ``[C]`` vectors), ``depthwise`` (a Conv with
  one filter of one input channel per group: ``W[index]``, ``b[index]``, ``group = len(index)``);
* ``stats``: how per-channel mean and variance cross it (``bn_stats.py``): ``same``,
  ``mean`` (averaging keeps the mean only), ``resize`` (nearest keeps both), ``sum`` (Add),
  ``concat``, ``gate`` (a Mul that may be ``x * g(x)``), ``batchnorm`` (where they start);
  ``activation`` names its function for ``expectation.activation``, whose moments follow;
* ``gate``: as ``g`` in ``x * g(x)``, what the product is called and its
  ``expectation.activation`` name (SiLU, HardSwish as some exports write them);
* ``gain``: how a relative output error crosses it downstream (``gains.py``): ``same``,
  ``narrow`` (a Conv keeps ``C_out / C_in`` of an error spread evenly), ``branch`` (a residual
  Add shrinks it to the branch's share).

Plain numpy: nothing here knows ONNX or onnx-graphsurgeon; callers describe a node as a
:class:`ChannelNode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import numpy as np

Channels = Literal["pointwise", "broadcast", "pooled", "batchnorm", "depthwise"]
Stats = Literal["same", "mean", "resize", "sum", "concat", "gate", "batchnorm"]
Gain = Literal["same", "narrow", "branch"]


@dataclass(frozen=True)
class Op:
    """How one op type treats channels (see the module doc); None: not known to keep them."""

    channels: Optional[Channels] = None
    stats: Optional[Stats] = None
    activation: Optional[str] = None
    gate: Optional[tuple[str, str]] = None
    gain: Optional[Gain] = None


OPS: dict[str, Op] = {
    "Relu": Op("pointwise", activation="Relu", gain="same"),
    "LeakyRelu": Op("pointwise", activation="LeakyRelu", gain="same"),
    "Sigmoid": Op("pointwise", activation="Sigmoid", gate=("SiLU", "SiLU"), gain="same"),
    "HardSigmoid": Op("pointwise", activation="HardSigmoid", gate=("HardSwish", "HardSigmoidGate"), gain="same"),
    "HardSwish": Op("pointwise", activation="HardSwish", gain="same"),
    "Tanh": Op("pointwise", activation="Tanh", gain="same"),
    "Elu": Op("pointwise", gain="same"),
    "Selu": Op("pointwise", gain="same"),
    "Celu": Op("pointwise"),
    "Softplus": Op("pointwise", activation="Softplus", gain="same"),
    "Softsign": Op("pointwise"),
    "Gelu": Op("pointwise", activation="Gelu", gain="same"),
    "Mish": Op("pointwise", activation="Mish", gain="same"),
    "Erf": Op("pointwise"),
    "Clip": Op("pointwise", activation="Clip", gain="same"),
    "Identity": Op("pointwise", stats="same", gain="same"),
    "Neg": Op("pointwise"),
    "Abs": Op("pointwise"),
    "Exp": Op("pointwise"),
    "Sqrt": Op("pointwise"),
    "Reciprocal": Op("pointwise"),
    "Floor": Op("pointwise"),
    "Ceil": Op("pointwise"),
    "Round": Op("pointwise"),
    "Cast": Op("pointwise"),
    "Dropout": Op(stats="same", gain="same"),
    "Add": Op("broadcast", stats="sum", gain="branch"),
    "Sub": Op("broadcast"),
    "Mul": Op("broadcast", stats="gate"),
    "Div": Op("broadcast"),
    "Pow": Op("broadcast"),
    "Max": Op("broadcast"),
    "Min": Op("broadcast"),
    "Sum": Op("broadcast"),
    "PRelu": Op("broadcast", gain="same"),
    "MaxPool": Op("pooled", gain="same"),
    "AveragePool": Op("pooled", stats="mean", gain="same"),
    "GlobalAveragePool": Op("pooled", stats="mean"),
    "GlobalMaxPool": Op("pooled"),
    "LpPool": Op("pooled"),
    "Resize": Op(stats="resize", gain="same"),
    "Upsample": Op(gain="same"),
    "Concat": Op(stats="concat"),
    "BatchNormalization": Op("batchnorm", stats="batchnorm", gain="same"),
    "Conv": Op("depthwise", gain="narrow"),  # channel-wise when depthwise only
}
UNKNOWN = Op()


def rule(op_type: str) -> Op:
    """The entry of ``op_type``; an op not in the table keeps nothing known."""
    return OPS.get(op_type, UNKNOWN)


def is_depthwise(weight_shape: tuple[int, ...], group: int) -> bool:
    """A Conv weight whose output channel ``c`` reads input channel ``c`` alone: one filter per
    group, one input channel per filter (a channel multiplier would make ``C_out > C_in``)."""
    return len(weight_shape) > 2 and weight_shape[0] == group and weight_shape[1] == 1


@dataclass(frozen=True)
class ChannelNode:
    """What :func:`channel_params` reads of a node, whichever graph library holds it: its op, how
    many outputs, its ``group`` attribute, which inputs are given (a non-empty name), and the
    values of input ``i`` where it is constant (None otherwise), read only when needed."""

    op: str
    outputs: int
    group: int
    named: tuple[bool, ...]
    constant: Callable[[int], Optional[np.ndarray]]


Changes = tuple[list[tuple[int, np.ndarray]], dict[str, int]]  # new constant inputs, new attributes


def channel_params(
    node: ChannelNode, variables: set[int], index: np.ndarray, channels: int, rank: int
) -> Optional[Changes]:
    """How ``node`` is rewritten to act on channels ``index`` of its ``variables`` inputs (of
    ``channels`` channels, rank ``rank``): the new parameter inputs and attributes; None if it
    mixes channels, has run-time parameters, or more than one output. The one rule for both a
    permutation (``index`` an order) and a trim (``index`` the kept channels) crossing it."""
    kind = rule(node.op).channels
    if node.outputs != 1 or 0 not in variables or kind is None:
        return None
    if kind == "pooled":
        return ([], {}) if variables == {0} else None
    if kind == "batchnorm":
        params = [node.constant(i) for i in range(1, len(node.named))]
        if variables != {0} or any(p is None or p.shape != (channels,) for p in params):
            return None
        return [(i + 1, p[index]) for i, p in enumerate(params)], {}
    if kind == "depthwise":
        return _depthwise_params(node, variables, index, channels)
    changes = []
    for i in range(len(node.named)):
        if i in variables or (kind == "pointwise" and i > 0):  # Clip's scalar bounds and the like
            continue
        values = node.constant(i)
        taken = None if values is None else take_constant(values, index, channels, rank)
        if taken is None:
            return None
        if taken is not values:
            changes.append((i, taken))
    return changes, {}


def _depthwise_params(node: ChannelNode, variables: set[int], index: np.ndarray, channels: int) -> Optional[Changes]:
    """A depthwise Conv keeps the filters of ``index`` (and their bias); ``group`` shrinks to match."""
    weight = node.constant(1)
    if weight is None or not (node.group == channels and is_depthwise(weight.shape, node.group)) or variables != {0}:
        return None
    changes = [(1, weight[index])]
    if len(node.named) > 2 and node.named[2]:
        bias = node.constant(2)
        if bias is None:
            return None
        changes.append((2, bias[index]))
    return changes, {"group": int(index.size)}


def take_constant(values: np.ndarray, index: np.ndarray, channels: int, rank: int) -> Optional[np.ndarray]:
    """A constant broadcast against a ``[N, channels, ...]`` tensor, with its channels taken by ``index``.

    Unchanged if it does not vary over channels; None if it does not broadcast per channel.
    """
    if values.ndim > rank:
        return None
    axis = values.ndim - (rank - 1)  # where the channel axis lands after right-alignment
    if axis < 0 or values.shape[axis] == 1:
        return values
    if values.shape[axis] != channels:
        return None
    return np.take(values, index, axis=axis)


CONV_LIKE = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
