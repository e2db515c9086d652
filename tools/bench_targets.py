"""Are the budgets met? ``--target-macs`` and ``--target-latency``, asked and measured.

For each model and target: prune with ``--target-macs F`` and read the Conv MACs removed; prune
with ``--target-latency F`` (layer times cached in one table per run) and then time the
original and the pruned model side by side (batch 1, one thread, interleaved, median of
``--runs``), independently of the pass's own check. Prints a markdown table.

Usage: python tools/bench_targets.py [--models bundled,resnet18] [--macs 0.2,0.3,0.4]
       [--latency 0.8,0.7,0.6] [--runs 50] [--write docs/results.md]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import onnxruntime as ort
from bench_common import load_model, write_section  # noqa: E402  (also puts the repository on the path)

import onnx_gkp  # noqa: E402
from onnx_gkp.cost.table import cpu_name
from onnx_gkp.runtime.sessions import random_inputs
from onnx_gkp.runtime.timing import median_latency_ms


def bench(name: str, macs: list[float], latency: list[float], runs: int, cache: Path) -> list[str]:
    original, shapes = load_model(name)
    rows = []
    for fraction in macs:
        start = time.perf_counter()
        _, report = onnx_gkp.prune(original, target_macs=fraction, test_shapes=shapes or None, latency_runs=0)
        t = report.totals
        removed = 1 - t["conv_macs_after"] / t["conv_macs_before"]
        rows.append(
            f"| {name} | remove {fraction:.0%} of Conv MACs | removed {removed:.1%} | "
            f"{t['pruned_layers']} pruned, "
            f"{sum(s.reason.startswith('left whole by the budget') for s in report.skipped)} left whole | "
            f"{time.perf_counter() - start:.0f} s |"
        )
        print(rows[-1], flush=True)
    for fraction in latency:
        start = time.perf_counter()
        pruned, report = onnx_gkp.prune(original, target_latency=fraction, test_shapes=shapes or None, cost_cache=cache)
        seconds = time.perf_counter() - start
        check = report.validation.latency_ms
        feeds = random_inputs(original, {k: tuple(v) for k, v in report.input_shapes.items()})
        again = median_latency_ms({"original": original, "pruned": pruned}, feeds, runs)
        rows.append(
            f"| {name} | at most {fraction:.2f} of the time | {again['pruned'] / again['original']:.2f} "
            f"(pass's own check {check['pruned'] / check['original']:.2f}; {again['original']:.2f} -> "
            f"{again['pruned']:.2f} ms) | "
            f"{report.totals['pruned_layers']} pruned, MACs "
            f"{report.totals['conv_macs_after'] / report.totals['conv_macs_before']:.0%} kept | "
            f"{seconds:.0f} s |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled,resnet18")
    parser.add_argument("--macs", default="0.2,0.3,0.4")
    parser.add_argument("--latency", default="0.8,0.7,0.6")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--write", type=Path, metavar="FILE.md")
    args = parser.parse_args(argv)
    split = lambda text: [float(x) for x in text.split(",") if x]  # noqa: E731
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for name in args.models.split(","):
            rows += bench(name, split(args.macs), split(args.latency), args.runs, Path(folder) / "costs.json")
    command = shlex.join(["python", "tools/bench_targets.py", *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join(
        [
            "### Budgets: asked and measured",
            "",
            f"`{command}`: onnxruntime {ort.__version__}, {cpu_name()}, batch 1, one thread, median of {args.runs} "
            "interleaved runs.",
            "",
            "| model | target | measured | layers | pass time |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, "bench_targets", text)


if __name__ == "__main__":
    main()
