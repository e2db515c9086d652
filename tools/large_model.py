"""A Conv chain over 2 GiB of weights, built on the fly, and what pruning it costs in memory.

``build`` writes ``large.onnx`` and its ``large.onnx.data`` layer by layer (the weights are never
all in memory at once). ``measure`` runs ``python -m onnx_gkp`` on it in a child process and
reads that child's own peak RSS (``os.wait4``), so nothing else in the caller counts.

Usage: python tools/large_model.py FOLDER [--layers 36] [--channels 4096] [-- onnx_gkp options]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

REPO = Path(__file__).resolve().parents[1]


def build(folder: Path, layers: int = 36, channels: int = 4096, seed: int = 0) -> int:
    """``folder/large.onnx`` (1x1 Convs with biases and Relus, input ``[N, C, 2, 2]``); its weight bytes."""
    rng = np.random.default_rng(seed)
    nodes, initializers, offset = [], [], 0
    with open(folder / "large.onnx.data", "wb") as data:
        for i in range(layers):
            for name, shape in ((f"w{i}", (channels, channels, 1, 1)), (f"b{i}", (channels,))):
                array = rng.standard_normal(shape, dtype=np.float32) / (
                    channels**0.5 if name[0] == "w" else 10.0
                )  # Python floats keep float32
                data.write(array.tobytes())
                tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=shape)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", "large.onnx.data"), ("offset", offset), ("length", array.nbytes)):
                    tensor.external_data.add(key=key, value=str(value))
                initializers.append(tensor)
                offset += array.nbytes
            source = "x" if i == 0 else f"r{i - 1}"
            nodes.append(helper.make_node("Conv", [source, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"))
            nodes.append(helper.make_node("Relu", [f"c{i}"], ["y" if i == layers - 1 else f"r{i}"], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", channels, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", channels, 2, 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (folder / "large.onnx").write_bytes(model.SerializeToString())
    return offset


def measure(source: Path, out: Path, *options: str) -> dict:
    """Exit code, wall seconds, peak RSS (bytes) and output of one CLI run on ``source``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = out.with_name(out.name + ".log")
    start = time.perf_counter()
    with open(logs, "w+") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "onnx_gkp", str(source), str(out), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage; reaps it
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    logs.unlink()
    return {
        "code": child.returncode,
        "seconds": time.perf_counter() - start,
        "peak_rss": usage.ru_maxrss * 1024,
        "output": output,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--channels", type=int, default=4096)
    parser.add_argument("options", nargs="*", help="onnx_gkp options (after --)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    weights = build(args.folder, args.layers, args.channels)
    result = measure(args.folder / "large.onnx", args.folder / "pruned.onnx", "--force", *args.options)
    print(result["output"])
    print(
        f"weights {weights / 2**30:.2f} GiB; exit {result['code']}; {result['seconds']:.0f} s; "
        f"peak RSS {result['peak_rss'] / 2**30:.2f} GiB = {result['peak_rss'] / weights:.2f}x the weights"
    )


if __name__ == "__main__":
    main()
