"""Is the pruned model faster on onnxruntime? Original vs ours vs fixed counts, side by side.

For each model: prune with our default (flexible G, runtime-aware), with ``--groups 1`` and
``--groups 8`` (and the quality-only flexible count), all at the same ratio, each validated
against its masked reference; then time the original and every pruned model in one
interleaved loop (batch 1, median), once with one thread and once with all threads (our default
is pruned for each: its layer timings are taken with the thread count it will run with). Prints
a markdown table: Conv MACs kept, latency, speed-up, speed-up / (MACs before / after)
(1.0 = the MACs saving fully turned into time), and the pass's own time (timing layers,
planning + rewriting; validation excluded).

Usage: python tools/bench_speed.py [--models resnet18,resnet50,...] [--ratio 0.5] [--runs 30]
       [--write docs/results.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort
from bench_common import load_model, write_section  # noqa: E402  (also puts the repository on the path)

import onnx_gkp  # noqa: E402
from onnx_gkp.analyse.shapes import resolve_input_shapes
from onnx_gkp.cost.table import cpu_name
from onnx_gkp.runtime.sessions import random_inputs
from onnx_gkp.runtime.timing import median_latency_ms

DEFAULT = "ours (default)"
METHODS = {
    "ours (default)": {},
    "ours, quality-only": {"runtime_aware": False},
    "groups 1": {"groups": 1},
    "groups 8": {"groups": 8},
}
DEFAULT_MODELS = "resnet18,resnet50,vgg16,mobilenet_v2,bundled,yolov8n,ppocr_det,orientation"


def bench(name: str, ratio: float, runs: int, cache: Path, all_threads: int) -> list[dict]:
    """One row per method; "ours (default)" is pruned again with the thread count it is timed at."""
    original, shapes = load_model(name)
    rows = []
    for method, options in METHODS.items():
        for threads in (1, all_threads) if method == DEFAULT else (1,):
            # Our default keeps its end-to-end guard (it needs the validation's latency runs).
            pruned, report = onnx_gkp.prune(
                original,
                ratio=ratio,
                test_shapes=shapes or None,
                latency_runs=20 if method == DEFAULT else 0,
                cost_cache=cache,
                threads=threads,
                **options,
            )
            t, totals = report.timings, report.totals
            row = (
                rows[-1]
                if threads > 1
                else {
                    "model": name,
                    "method": method,
                    "macs": totals["conv_macs_after"] / totals["conv_macs_before"],
                    "pruned": totals["pruned_layers"],
                    "gathers": totals["gathers_added"],
                    "pass_s": t.get("plan", 0) + t.get("rewrite", 0),
                    "measure_s": t.get("measure", 0),
                }
            )
            row[f"model_{threads}"] = pruned
            if threads == 1:
                rows.append(row)
    feeds = random_inputs(original, resolve_input_shapes(original, shapes or None))
    for threads in sorted({1, all_threads}):
        models = {"original": original, **{r["method"]: r.get(f"model_{threads}", r["model_1"]) for r in rows}}
        latency = median_latency_ms(models, feeds, runs, threads)
        for row in rows:
            row[f"ms_{threads}"] = latency[row["method"]]
            row[f"orig_{threads}"] = latency["original"]
    for row in rows:
        for threads in (1, all_threads):
            row.pop(f"model_{threads}", None)
    return rows


def table(rows: list[dict], threads: int) -> str:
    lines = [
        "| model | method | pruned Conv | Gathers | Conv MACs kept | 1 thread: ms (orig) | speed-up | speed-up / "
        "MACs ratio "
        f"| {threads} threads: ms (orig) | speed-up | pass s (timing layers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s1, sn = r["orig_1"] / r["ms_1"], r[f"orig_{threads}"] / r[f"ms_{threads}"]
        lines.append(
            f"| {r['model']} | {r['method']} | {r['pruned']} | {r['gathers']} | {r['macs']:.1%} "
            f"| {r['ms_1']:.2f} ({r['orig_1']:.2f}) | {s1:.2f}x | {s1 * r['macs']:.2f} "
            f"| {r[f'ms_{threads}']:.2f} ({r[f'orig_{threads}']:.2f}) | {sn:.2f}x "
            f"| {r['pass_s']:.1f} ({r['measure_s']:.1f}) |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--cost-cache", type=Path, help="layer-time cache (default: a fresh one, so the pass time includes timing)"
    )
    parser.add_argument(
        "--write", type=Path, metavar="FILE.md", help="also write the table into this file's bench_speed section"
    )
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cost_cache or Path(tmp) / "costs.json"
        rows = []
        for name in args.models.split(","):
            rows.extend(bench(name, args.ratio, args.runs, cache, threads))
            print(table(rows, threads), end="\n\n", flush=True)
    command = "python tools/bench_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        f"## Speed (ratio {args.ratio})\n\n`{command.strip()}`: onnxruntime {ort.__version__}, {cpu_name()}, batch 1, "
        f"median of {args.runs} interleaved runs; numpy {np.__version__}.\n\n{table(rows, threads)}"
    )
    print(text)
    if args.write:
        write_section(args.write, f"bench_speed ratio={args.ratio}", text)


if __name__ == "__main__":
    main()
