"""How much of a Conv's relative output error reaches the rest of the network, read off the graph.

Pruning a layer perturbs its output by some fraction of its energy (``quality.py``). Two
things the graph shows change how much of that perturbation the network downstream sees:

* a Conv that narrows the channels (``C_out < C_in``, e.g. MobileNetV2's projections)
  passes the signal, which lives in the few directions it was trained to keep, but only
  about ``C_out / C_in`` of an error spread evenly over its inputs;
* a residual ``Add`` mixes the branch with the stream it joins: the error, relative to the
  sum, shrinks to the branch's share of the sum's energy (second moments from BN statistics,
  ``bn_stats.py``).

The walk follows the single reader of the Conv's output through the ops an error crosses
unchanged (BN, activations, pooling: ``gain="same"`` in ``ops.OPS``), depthwise and narrowing
Convs until it meets an Add (applied, then stop) or anything else (stop). The product is the layer's
*error gain*; with it, relative errors of different layers
become comparable costs for the budget. Where statistics are missing the Add is not applied
and the path says so.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from ..graphs import group_of
from .bn_stats import ChannelStats, StatsReader
from .ops import rule

MAX_STEPS = 16


def _energy(stats: object) -> Optional[float]:
    """Summed second moment of a tensor's channels, where mean and spread are both known."""
    if not isinstance(stats, ChannelStats) or stats.var is None:
        return None
    return float(np.sum(stats.mean**2 + stats.var))


class ErrorGains:
    """Memo-free walker over one model; call it with a Conv's node index."""

    def __init__(self, model: onnx.ModelProto, consts: dict[str, np.ndarray], stats: StatsReader) -> None:
        self.nodes = model.graph.node
        self.consts = consts
        self.stats = stats
        self.outputs = {o.name for o in model.graph.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in set(node.input):
                self.readers.setdefault(name, []).append(node)

    def __call__(self, node_index: int) -> tuple[float, str]:
        """``(gain, path)``: the factor on the layer's relative error, and the nodes that set it."""
        tensor, gain, path = self.nodes[node_index].output[0], 1.0, []
        for _ in range(MAX_STEPS):
            readers = self.readers.get(tensor, [])
            if tensor in self.outputs or len(readers) != 1:
                path.append("graph output" if tensor in self.outputs else f"{len(readers)} readers")
                break
            node = readers[0]
            crossing = rule(node.op_type).gain
            if crossing == "same":
                tensor = node.output[0]
                continue
            if crossing == "narrow" and node.input[1] in self.consts:
                c_out, c_in_group = self.consts[node.input[1]].shape[:2]
                groups = group_of(node)
                c_in = c_in_group * groups
                if c_out < c_in and groups == 1:
                    gain *= c_out / c_in
                    path.append(f"Conv {c_in}->{c_out}")
                tensor = node.output[0]
                continue
            if crossing == "branch" and len(node.input) == 2:
                other = node.input[1] if node.input[0] == tensor else node.input[0]
                own, rest = _energy(self.stats(tensor)), _energy(self.stats(other))
                if own is not None and rest is not None and own + rest > 0:
                    gain *= own / (own + rest)
                    path.append(f"Add (branch share {own / (own + rest):.2f})")
                else:
                    path.append("Add (statistics unknown)")
                break
            path.append(node.op_type)
            break
        return gain, " > ".join(path)
