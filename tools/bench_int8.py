"""Pruning stacked on INT8: fp32, INT8 alone, ours fp32, ours + INT8, side by side.

For each model: onnxruntime's static QDQ quantization of the original (INT8 alone, the same
types and the same fit samples the pass uses), the pass in fp32 and the pass with
``--quantize int8`` (layers timed in int8, the fidelity target checked on the quantized model).
The pass runs as a user runs it: its end-to-end guard and its Gather decision measure the
assembled model. All four are timed in one process (one thread, batch 1, runs interleaved, median) and scored on
the model's evaluation inputs, which the pass never sees (for the random-weight ResNet shapes
there is no meaningful fidelity: speed only). The Transposes of onnxruntime's optimised INT8
graphs are counted: each channel Gather between int8 Convs costs two.

    python tools/bench_int8.py --models bundled,resnet18 --keep 0.98 [--write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import real_data
from bench_common import ROOT, load_model, write_section
from bench_quality import TASKS, scored

import onnx_gkp
from models.shapes import BUILDERS
from onnx_gkp.runtime.quantize import quantized
from onnx_gkp.runtime.timing import median_latency_ms


def transposes(model: onnx.ModelProto) -> int:
    """Transposes in onnxruntime's optimised graph of ``model`` (one thread, all optimisations)."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)["Transpose"]


def calibration(name: str, count: int) -> np.ndarray:
    if name in TASKS:
        return TASKS[name].calibration(count)
    return real_data.calibration_crops(count, 224, True)  # the random-weight shapes take photo crops


def bench(name: str, goal: dict, samples: int, runs: int) -> str:
    """One table row for ``name``, pruned to ``goal`` (``{"keep": F}`` or ``{"ratio": R}``, with
    an ``include`` pattern where given)."""
    original, shapes = load_model((TASKS[name].zoo or name) if name in TASKS else name)
    data = {original.graph.input[0].name: calibration(name, samples)}
    common = dict(calibration=data, test_shapes=shapes or None, **goal)
    start = time.perf_counter()
    fp32, report = onnx_gkp.prune(original, **common)
    fp32_s = time.perf_counter() - start
    start = time.perf_counter()
    shipped, q_report = onnx_gkp.prune(original, quantize="int8", **common)
    int8_s = time.perf_counter() - start
    types = q_report.quantization["types"]
    held = set(q_report.samples["held_out_index"])
    fit = {k: v[[i for i in range(len(v)) if i not in held]] for k, v in data.items()}
    alone = quantized(original, fit, types)
    models = {"fp32": original, "int8 alone": alone, "ours fp32": fp32, "ours + int8": shipped}
    shape = tuple(shapes.get(original.graph.input[0].name, ())) or (1, *data[original.graph.input[0].name].shape[1:])
    feeds = {k: v[: shape[0]] for k, v in data.items()}
    ms = median_latency_ms(models, feeds, runs)
    scores = scored(TASKS[name], original, models) if name in TASKS else {k: "n/a (random weights)" for k in models}
    macs = lambda r: r.totals["conv_macs_after"] / r.totals["conv_macs_before"]  # noqa: E731
    row = (
        f"| {name} | {ms['fp32'] / ms['int8 alone']:.2f}x; {scores['int8 alone']} "
        f"| {ms['fp32'] / ms['ours fp32']:.2f}x; {scores['ours fp32']} ({macs(report):.0%} MACs) "
        f"| {ms['fp32'] / ms['ours + int8']:.2f}x; {scores['ours + int8']} ({macs(q_report):.0%} MACs) "
        f"| **{ms['int8 alone'] / ms['ours + int8']:.2f}x** | {transposes(alone)} / {transposes(shipped)} "
        f"| {types} | {fp32_s:.0f} / {int8_s:.0f} s |"
    )
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="bundled,resnet18", help=f"comma-separated: bundled, {', '.join(BUILDERS)} or zoo models"
    )
    goal = parser.add_mutually_exclusive_group()
    goal.add_argument("--keep", type=float, default=0.98, help="the fidelity target of both runs of the pass")
    goal.add_argument("--ratio", type=float, help="instead, the uniform ratio (with the calibration refit)")
    parser.add_argument("--include", help="prune only the Convs whose names match (the pass's --include)")
    parser.add_argument(
        "--samples", type=int, default=512, help="calibration samples (a quarter held out inside the pass)"
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--write", action="store_true", help="put the table in docs/results.md")
    args = parser.parse_args()
    goal = {"keep": args.keep} if args.ratio is None else {"ratio": args.ratio}
    flag = " ".join(f"--{k} {v:g}" for k, v in goal.items())
    if args.include:
        goal["include"] = args.include
        flag += f" --include '{args.include}'"
    header = [
        f"**Pruning on INT8** (`python tools/bench_int8.py --models {args.models} {flag} --samples {args.samples}`; "
        f"onnxruntime {ort.__version__}, one thread, batch 1, all four variants of a model interleaved in one process, "
        f"median of {args.runs}; speed-ups over the fp32 original, fidelity on evaluation inputs the pass never saw)",
        "",
        f"| model | INT8 alone | ours fp32 (`{flag}`) | ours + INT8 (`{flag} --quantize int8`) | ours + INT8 over "
        "INT8 alone "
        "| Transposes in the int8 graph (alone / ours) | INT8 types | pass time fp32 / int8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [bench(name, goal, args.samples, args.runs) for name in args.models.split(",")]
    text = "\n".join(header + rows)
    print(text)
    if args.write:
        write_section(ROOT / "docs" / "results.md", f"bench-int8 {flag}", text)


if __name__ == "__main__":
    main()
