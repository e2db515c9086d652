"""The model run over calibration data: its outputs, a layer's input moments, and the error a
planned layer alone adds at its output.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..analyse.sites import ConvSite
from ..check.reference import masked_reference
from ..layer.planner import LayerPlan
from ..runtime.sessions import batch_size, chunks, run, session, up_to


def calibration_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """Calibration runs are never timed: at least as many threads as the machine has cores
    (``threads`` only matters for the layer timings)."""
    return session(model, optimise=True, threads=max(threads, os.cpu_count() or 1))


def _head(data: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    return {name: array[:samples] for name, array in data.items()}


def outputs_on(
    model: onnx.ModelProto, data: dict[str, np.ndarray], *, threads: int = 1, chunk: int = 32
) -> list[np.ndarray]:
    """Every graph output of ``model`` over all of ``data``, batches concatenated."""
    sess = calibration_session(model, threads)
    parts = [run(sess, batch) for batch in chunks(data, batch_size(model, chunk))]
    return [np.concatenate(column) for column in zip(*parts)]


def input_moments(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    data: dict[str, np.ndarray],
    *,
    threads: int = 1,
    samples: int = 64,
    chunk: int = 32,
) -> dict[int, np.ndarray]:
    """``E[x_c^2]`` of each site's input channels over the first ``samples`` calibration inputs,
    for the budget's quality cost (``quality.py``) in place of the BN-derived moments."""
    names = list(dict.fromkeys(model.graph.node[s.node_index].input[0] for s in sites))
    inner = [n for n in names if n not in data]  # a Conv may read a graph input directly
    sess = calibration_session(up_to(model, inner), threads) if inner else None
    head = _head(data, samples)
    sums = {name: 0.0 for name in names}
    count = 0
    for batch in chunks(head, batch_size(model, chunk)):
        values = {**batch, **(dict(zip(inner, run(sess, batch))) if sess is not None else {})}
        for name in names:
            x = values[name].astype(np.float64)
            sums[name] = sums[name] + np.square(x).reshape(x.shape[0], x.shape[1], -1).mean(axis=2).sum(axis=0)
        count += next(iter(batch.values())).shape[0]
    return {s.node_index: sums[model.graph.node[s.node_index].input[0]] / count for s in sites}


def output_errors(
    model: onnx.ModelProto,
    sites: Sequence[ConvSite],
    plans: Sequence[LayerPlan],
    data: dict[str, np.ndarray],
    *,
    threads: int = 1,
    samples: int = 32,
) -> list[float]:
    """For each site pruned alone to its plan (the masked reference), the model's relative output
    error ``sum ||y' - y||^2 / sum ||y||^2`` over the first ``samples`` calibration inputs: the
    layer's measured sensitivity, for the budget's quality cost."""
    batches = list(chunks(_head(data, samples), batch_size(model, samples)))
    dense = calibration_session(model, threads)
    wanted = [run(dense, batch) for batch in batches]
    scale = sum(float(np.sum(np.square(y.astype(np.float64)))) for outs in wanted for y in outs)
    errors = []
    for site, plan in zip(sites, plans):
        pruned = calibration_session(masked_reference(model, [site], [plan]), threads)
        diff = sum(
            float(np.sum(np.square(a.astype(np.float64) - b)))
            for batch, outs in zip(batches, wanted)
            for a, b in zip(run(pruned, batch), outs)
        )
        errors.append(diff / max(scale, 1e-30))
    return errors
