"""Kept counts on onnxruntime's channel blocks or not: the same pruning with ``--align 1`` (the
exact count) and the default ``--align 16``, fp32 and INT8, timed side by side.

Speed only: the INT8 variants are quantized (u8s8, as ``--quantize`` ships) on noise ranges,
which sets their scales but not their speed. Every variant of a run is timed interleaved with
the others in one process (one thread, batch 1, median). ``docs/method.md`` ("Aligned kept
counts") has the figures.

    python tools/bench_align.py mobilenet_v2_imagenet --include 'conv\\.2/Conv$' --ratios 0.125 0.25
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from bench_common import load_model

from onnx_gkp import prune
from onnx_gkp.runtime.quantize import quantized
from onnx_gkp.runtime.timing import median_latency_ms


def variants(
    name: str, include: str | None, ratios: list[float]
) -> tuple[dict[str, onnx.ModelProto], dict[str, str], dict]:
    """The original and each (ratio, align) pruning, with the Conv MACs each keeps."""
    model, shapes = load_model(name)
    shapes = shapes or {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    found, kept = {"original": model}, {"original": "100%"}
    for ratio in ratios:
        for align in (1, 16):
            pruned, report = prune(model, groups=1, include=include, ratio=ratio, align=align, test_shapes=shapes)
            key = f"ratio {ratio}, align {align}"
            found[key] = pruned
            kept[key] = f"{report.totals['conv_macs_after'] / report.totals['conv_macs_before']:.1%}"
    return found, kept, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--include")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.125, 0.25])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    models, kept, shapes = variants(args.model, args.include, args.ratios)
    rng = np.random.default_rng(0)
    ranges = {n: rng.standard_normal((8, *s[1:])).astype(np.float32) for n, s in shapes.items()}
    feeds = {n: a[:1] for n, a in ranges.items()}
    fp32 = median_latency_ms(models, feeds, args.runs)
    int8 = median_latency_ms({k: quantized(m, ranges, "u8s8") for k, m in models.items()}, feeds, args.runs)
    print(
        f"{args.model} (--groups 1 --include {args.include!r}; speed-ups over the original in its precision, "
        f"median of {args.runs} interleaved runs, one thread)\n"
    )
    print("| variant | Conv MACs kept | fp32 | INT8 (u8s8) |\n|---|---|---|---|")
    for key in models:
        print(f"| {key} | {kept[key]} | {fp32['original'] / fp32[key]:.2f}x | {int8['original'] / int8[key]:.2f}x |")


if __name__ == "__main__":
    main()
