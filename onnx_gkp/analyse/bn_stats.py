"""Per-channel mean (and variance) of a tensor, read off the graph without data.

The one source of statistics in an inference graph is BatchNormalization: over the data it
was trained on, its output channel ``c`` has mean ``B[c]`` and variance ``scale[c]**2``.
From there the walk follows what keeps the numbers known: activations (their moments under a
normal, ``expectation.py``; SiLU and HardSwish written as ``x * Sigmoid(x)`` and
``x * HardSigmoid(x)`` too), residual ``Add`` (means add; variances add as if independent),
``Concat`` of channels, nearest ``Resize``, average pooling (mean only), ``Identity`` and
``Dropout``. Anything else (a Conv with BN folded in, most exports) gives no statistics, and
the reason says where the walk stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import onnx

from .expectation import activation, moments
from .ops import rule


@dataclass(frozen=True)
class ChannelStats:
    """``mean`` per channel; ``var`` where the spread is known too; ``path`` says from what."""

    mean: np.ndarray
    var: Optional[np.ndarray]
    path: str


Found = Union[ChannelStats, str]  # the statistics, or why there are none


class StatsReader:
    """Memoised walk from a tensor back to the BatchNormalizations it derives from."""

    def __init__(self, model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> None:
        self.consts = consts
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.found: dict[str, Found] = {}

    def __call__(self, tensor: str) -> Found:
        if tensor not in self.found:
            self.found[tensor] = self._read(tensor)
        return self.found[tensor]

    def _read(self, tensor: str) -> Found:
        node = self.producer.get(tensor)
        if node is None:
            return "input mean unknown: it is a graph input"
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            return f"input mean unknown: produced by {node.domain}.{op}"
        how = rule(op)
        if how.stats == "batchnorm":
            scale, bias = (self.consts.get(n) for n in node.input[1:3])
            if scale is None or bias is None or len(node.output) > 1 and any(node.output[1:]):
                return "input mean unknown: BatchNormalization with parameters computed at run time"
            return ChannelStats(bias.astype(np.float64), scale.astype(np.float64) ** 2, op)
        if how.stats == "same":
            return self(node.input[0])
        if how.stats in ("mean", "resize"):
            return self._resampled(node)
        if how.stats == "sum":
            return self._added(node)
        if how.stats == "concat":
            return self._concatenated(node)
        if how.stats == "gate":
            return self._gated(node)
        act = activation(how.activation, **self._parameters(node)) if how.activation else None
        if act is None:
            return f"input mean unknown: produced by {op}"
        return self._activated(op, act, self(node.input[0]))

    def _parameters(self, node: onnx.NodeProto) -> dict[str, float]:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "LeakyRelu":
            return {"alpha": attrs.get("alpha", 0.01)}
        if node.op_type == "HardSigmoid":
            return {"alpha": attrs.get("alpha", 0.2), "beta": attrs.get("beta", 0.5)}
        if node.op_type == "Clip":  # bounds as inputs (opset >= 11) or attributes (before)
            bounds = [self.consts.get(n) if n else None for n in list(node.input[1:3]) + [""] * 2][:2]
            low = float(bounds[0]) if bounds[0] is not None else attrs.get("min", -np.inf)
            high = float(bounds[1]) if bounds[1] is not None else attrs.get("max", np.inf)
            return {"low": low, "high": high}
        return {}

    @staticmethod
    def _activated(op: str, act, source: Found) -> Found:
        if isinstance(source, str):
            return source
        if source.var is None:
            return f"input mean unknown: {op} of a tensor whose spread is unknown ({source.path})"
        mean, var = moments(act, source.mean, source.var)
        return ChannelStats(mean, var, f"{source.path} > {op}")

    def _resampled(self, node: onnx.NodeProto) -> Found:
        """Averaging keeps the mean and shrinks the spread; nearest resizing keeps both."""
        source = self(node.input[0])
        if isinstance(source, str):
            return source
        resize = rule(node.op_type).stats == "resize"
        nearest = resize and all(a.s == b"nearest" for a in node.attribute if a.name == "mode")
        if resize and not nearest:
            return f"input mean unknown: produced by a non-nearest Resize ({source.path})"
        return ChannelStats(source.mean, source.var if nearest else None, f"{source.path} > {node.op_type}")

    def _channel_constant(self, name: str, channels: int) -> Optional[np.ndarray]:
        """A scalar or per-channel (``[C, 1, 1]``-like) constant as ``[C]``, else None."""
        value = self.consts.get(name)
        if value is None or not (value.size == 1 or value.size == channels and value.shape[-2:] == (1, 1)):
            return None
        return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,))

    def _added(self, node: onnx.NodeProto) -> Found:
        """Two known branches add; a known branch plus a scalar or per-channel constant shifts."""
        variables = [n for n in node.input if n not in self.consts]
        constants = [n for n in node.input if n in self.consts]
        parts = [self(n) for n in variables]
        reason = next((p for p in parts if isinstance(p, str)), None)
        if reason is not None:
            return reason
        if len(parts) == 2:
            a, b = parts
            var = a.var + b.var if a.var is not None and b.var is not None else None
            return ChannelStats(a.mean + b.mean, var, f"Add({a.path}, {b.path})")
        if len(parts) == 1 and len(constants) == 1:
            shift = self._channel_constant(constants[0], parts[0].mean.size)
            if shift is not None:
                return ChannelStats(parts[0].mean + shift, parts[0].var, f"{parts[0].path} > Add")
        return "input mean unknown: Add of an unsupported constant"

    def _concatenated(self, node: onnx.NodeProto) -> Found:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis != 1:
            return f"input mean unknown: Concat on axis {axis}"
        parts = [self(n) for n in node.input]
        reason = next((p for p in parts if isinstance(p, str)), None)
        if reason is not None:
            return reason
        var = None if any(p.var is None for p in parts) else np.concatenate([p.var for p in parts])
        return ChannelStats(
            np.concatenate([p.mean for p in parts]), var, "Concat(" + ", ".join(p.path for p in parts) + ")"
        )

    def _gated(self, node: onnx.NodeProto) -> Found:
        """``x * Sigmoid(x)`` is SiLU and ``x * HardSigmoid(x)`` a HardSwish; other products are not followed."""
        for x, gate in (node.input, reversed(node.input)):
            gate_node = self.producer.get(gate)
            if gate_node is None or not gate_node.input or gate_node.input[0] != x:
                continue
            made = rule(gate_node.op_type).gate
            if made is not None:
                name, function = made
                return self._activated(name, activation(function, **self._parameters(gate_node)), self(x))
        return "input mean unknown: produced by Mul"
