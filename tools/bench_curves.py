"""Data-free error curves against measured ones: does the estimate rank layers and ratios right?

For one model of ``bench_quality.TASKS``: every prunable layer's estimated curve (weights, BN
statistics and the graph's error gains: what the data-free default uses) and its curve measured
on 16 real inputs (each layer pruned alone, ``G = 1``, at each ratio of the grid), then the
Spearman rank correlation over all (layer, ratio) points and over the layers at each ratio,
and the ratio of estimate to measurement (the estimate is usable as an allowance only if that
ratio is steady).

    python tools/bench_curves.py bundled
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_common import ROOT, write_section
from bench_quality import TASKS, load_model
from scipy.stats import spearmanr

from onnx_gkp.analyse.sites import analyse
from onnx_gkp.layer.planner import PlanOptions
from onnx_gkp.policy.curves import GRID, estimated_curves, measured_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TASKS))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    task = TASKS[args.model]
    model, shapes = load_model(args.model)
    sites = analyse(model, None, None, shapes or None, 4).sites
    options = PlanOptions()
    estimated = estimated_curves(model, sites, options)
    measured = measured_curves(model, sites, options, {model.graph.input[0].name: task.calibration(16)}, threads=2)
    est = np.array([estimated[s.node_index] for s in sites])
    got = np.array([measured[s.node_index] for s in sites])
    rows = [
        "| ratio | Spearman over layers | median estimate / measured | its spread (90th / 10th percentile) |",
        "|---|---|---|---|",
    ]
    for i, ratio in enumerate(GRID):
        scale = est[:, i] / np.maximum(got[:, i], 1e-12)
        rows.append(
            f"| {ratio:g} | {spearmanr(est[:, i], got[:, i])[0]:.2f} | {np.median(scale):.3g} | "
            f"{np.percentile(scale, 90) / max(np.percentile(scale, 10), 1e-12):.1f}x |"
        )
    overall = spearmanr(est.ravel(), got.ravel())[0]
    table = (
        "\n".join(rows)
        + f"\n\nSpearman over all {est.size} (layer, ratio) points: {overall:.2f} ({len(sites)} layers)."
    )
    print(table)
    if args.write:
        write_section(
            ROOT / "docs" / "results.md",
            f"curves-{args.model}",
            f"`python tools/bench_curves.py {args.model}`\n\n{table}",
        )


if __name__ == "__main__":
    main()
