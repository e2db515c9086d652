"""How onnxruntime's int8 Conv time follows its channel counts: one 3x3 Conv + Relu, quantized
(QDQ, u8s8) as ``--quantize`` does, with fewer inputs or fewer filters than the dense layer.

Each count is timed interleaved with the dense layer (one thread, batch 1, median); the table
gives the time relative to the dense layer. ``docs/results.md`` ("INT8: why the bundled model
gains almost nothing") has the figures for the bundled model's three stages.

    python tools/bench_int8_kernels.py --size 28 --channels 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from bench_common import ROOT  # noqa: F401  (puts the package on the path)
from onnx import helper, numpy_helper

from onnx_gkp.runtime.quantize import quantized
from onnx_gkp.runtime.sessions import session


def layer(inputs: int, filters: int, size: int, rng: np.random.Generator) -> onnx.ModelProto:
    """One 3x3 Conv + Relu at ``size`` x ``size``, quantized."""
    weights = [
        numpy_helper.from_array((rng.standard_normal((filters, inputs, 3, 3)) * 0.1).astype(np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal(filters) * 0.1).astype(np.float32), "b"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", 1, [1, inputs, size, size])],
        [helper.make_tensor_value_info("y", 1, None)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ranges = {"x": rng.standard_normal((2, inputs, size, size)).astype(np.float32)}
    return quantized(model, ranges, "u8s8", prepare=False)


def relative_times(size: int, channels: int, vary: str, runs: int) -> dict[int, float]:
    """Time of each count of ``vary`` (``inputs`` or ``filters``) over the dense layer's, runs
    interleaved pair by pair."""
    rng = np.random.default_rng(0)
    dense = session(layer(channels, channels, size, rng), optimise=True)
    full = {"x": rng.standard_normal((1, channels, size, size)).astype(np.float32)}
    result = {}
    for count in range(4, channels + 1, 4):
        inputs, filters = (count, channels) if vary == "inputs" else (channels, count)
        pruned = session(layer(inputs, filters, size, rng), optimise=True)
        feeds = {"x": full["x"][:, :inputs]}
        times: dict[str, list[float]] = {"dense": [], "pruned": []}
        for _ in range(runs):
            for name, sess, feed in (("dense", dense, full), ("pruned", pruned, feeds)):
                start = time.perf_counter()
                sess.run(None, feed)
                times[name].append(time.perf_counter() - start)
        result[count] = statistics.median(times["pruned"]) / statistics.median(times["dense"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(
        f"3x3 QLinearConv at {args.size}x{args.size}, {args.channels} channels dense; time relative to the dense layer"
    )
    for vary in ("inputs", "filters"):
        times = relative_times(args.size, args.channels, vary, args.runs)
        print(f"fewer {vary}: " + "  ".join(f"{c}: {t:.2f}" for c, t in times.items()))


if __name__ == "__main__":
    main()
