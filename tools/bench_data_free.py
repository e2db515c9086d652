"""The data-free default, measured on real data: what each allowance prunes, and what it costs.

Without data the pass prunes each layer as far as its *estimated* error curve stays within an
allowance (``policy/data_free.py``). For one model of ``bench_quality.TASKS``:

1. the layers whose estimate is furthest below their error measured on 16 of the task's
   evaluation inputs, each pruned alone as the data-free default would prune it (masked, with
   data-free bias compensation), at the ratios of the grid an allowance up to 0.01 admits;
2. the data-free default at each ``--allowances`` value: Conv MACs kept, speed-up against the
   original side by side (one thread, batch 1, interleaved, median) and fidelity on every
   evaluation input.

    python tools/bench_data_free.py mobilenet_v2_photos --allowances 0.004 1e-4 1e-5
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_common import ROOT, write_section
from bench_quality import TASKS, load_model, outputs

import onnx_gkp
import onnx_gkp.policy.data_free as data_free
from onnx_gkp.analyse.sites import analyse
from onnx_gkp.layer.planner import PlanOptions
from onnx_gkp.policy.curves import GRID, estimated_curves, grid_plans
from onnx_gkp.refit.activations import output_errors
from onnx_gkp.refit.compensated import compensated
from onnx_gkp.runtime.timing import median_latency_ms

ADMITTED = 0.01  # estimates above this no allowance worth considering admits
SHOWN = 6


def underestimates(model, shapes, images: np.ndarray) -> str:
    """The (layer, ratio) points an allowance up to ``ADMITTED`` admits, worst measured/estimated first."""
    sites = analyse(model, None, None, shapes or None, 4).sites
    options = PlanOptions()
    curves = estimated_curves(model, sites, options)
    points = [
        (s, i, p)
        for s in sites
        for i, p in enumerate(grid_plans(s, options))
        if 0 < curves[s.node_index][i] <= ADMITTED
    ]
    errors = output_errors(
        model,
        [s for s, _, _ in points],
        [compensated(s, p) for s, _, p in points],
        {model.graph.input[0].name: images[:16]},
        threads=2,
        samples=16,
    )
    ranked = sorted(zip(points, errors), key=lambda item: -item[1] / curves[item[0][0].node_index][item[0][1]])
    rows = ["| layer | ratio | estimated error | measured error | measured / estimated |", "|---|---|---|---|---|"]
    for (site, i, _), error in ranked[:SHOWN]:
        estimate = curves[site.node_index][i]
        rows.append(f"| `{site.node}` | {GRID[i]:g} | {estimate:.2g} | {error:.2g} | {error / estimate:.2g}x |")
    return "\n".join(rows) + f"\n\n{len(points)} (layer, ratio) points with an estimate in (0, {ADMITTED:g}]."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TASKS))
    parser.add_argument("--allowances", type=float, nargs="+", default=[0.004, 1e-4, data_free.DATA_FREE_ALLOWANCE])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    task = TASKS[args.model]
    original, shapes = load_model(task.zoo or args.model)
    images = task.inputs()[task.reserved :]
    metric = task.metric(slice(task.reserved, None))
    dense = outputs(original, images, task.batch)
    worst = underestimates(original, shapes, images)
    variants = {}
    for allowance in args.allowances:
        data_free.DATA_FREE_ALLOWANCE = allowance  # what-if: the pass's constant, for this run only
        variants[allowance] = onnx_gkp.prune(original, test_shapes=shapes or None, latency_runs=0)
    feeds = {original.graph.input[0].name: images[:1].astype(np.float32)}
    times = median_latency_ms({"original": original, **{f"{a:g}": v[0] for a, v in variants.items()}}, feeds, args.runs)
    rows = [f"| allowance | layers pruned | Conv MACs kept | speed-up | {task.metric_name} |", "|---|---|---|---|---|"]
    for allowance, (pruned, report) in variants.items():
        t = report.totals
        rows.append(
            f"| {allowance:g} | {t['pruned_layers']} | {t['conv_macs_after'] / t['conv_macs_before']:.1%} | "
            f"{times['original'] / times[f'{allowance:g}']:.2f}x | "
            f"{metric(dense, outputs(pruned, images, task.batch))} |"
        )
    table = f"{worst}\n\n" + "\n".join(rows)
    print(table)
    if args.write:
        command = (
            f"python tools/bench_data_free.py {args.model} --allowances {' '.join(f'{a:g}' for a in args.allowances)}"
        )
        write_section(ROOT / "docs" / "results.md", f"data-free-{args.model}", f"`{command}`\n\n{table}")


if __name__ == "__main__":
    main()
