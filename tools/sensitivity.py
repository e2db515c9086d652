"""How much does pruning one layer alone hurt? Measured on real data, next to the data-free cost.

For each prunable Conv, the masked reference with only that layer pruned (uniform ``--ratio``,
``G = --groups``) runs on real inputs, and its outputs are compared with the unpruned model's:
mean KL divergence of the softmax for classifiers, ``1 - cosine`` for the others. Printed next
to the budget's data-free quality cost of the same plan (``onnx_gkp.layer.quality``), with the
Spearman rank correlation of the two: this is the check that the data-free cost ranks layers
the way the network does (issue: budgets).

Usage: python tools/sensitivity.py [--model bundled] [--ratio 0.25] [--groups 1] [--inputs 64]
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np
from bench_common import load_model  # also puts the repository on the path
from bench_quality import TASKS, outputs
from scipy.stats import spearmanr

from onnx_gkp.analyse.bn_stats import StatsReader
from onnx_gkp.analyse.gains import ErrorGains
from onnx_gkp.analyse.graph import constant_tensors
from onnx_gkp.analyse.sites import analyse
from onnx_gkp.check.metrics import kl_divergence
from onnx_gkp.check.reference import masked_reference
from onnx_gkp.layer.planner import PlanOptions, kernel_energy, plan_for_count
from onnx_gkp.layer.quality import relative_error, weighted_energy
from onnx_gkp.policy.layer_options import second_moment

CLASSIFIERS = {"bundled", "mnist", "mobilenet_v2_imagenet", "mobilenet_v2_imagenet_folded"}


def divergence(dense: np.ndarray, pruned: np.ndarray, classifier: bool) -> float:
    """Mean KL(softmax(dense) || softmax(pruned)) for classifiers, else mean ``1 - cosine``."""
    if classifier:
        return kl_divergence(dense, pruned)
    a, b = dense.reshape(len(dense), -1), pruned.reshape(len(pruned), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return float(np.mean(1.0 - cos))


def measure(name: str, ratio: float, groups: int, count: int) -> list[tuple[str, float, float]]:
    """``(node, data-free cost, measured divergence)`` for every prunable Conv of ``name``."""
    model, shapes = load_model(name)
    task = TASKS[name]
    images = task.inputs()[:count]
    dense = outputs(model, images, task.batch)
    options = PlanOptions(ratio=ratio, groups=groups)
    consts, _ = constant_tensors(model)
    gains = ErrorGains(model, consts, StatsReader(model, consts))
    rows = []
    for site in analyse(model, test_shapes=shapes or None).sites:
        c_out, c_in = site.weight.shape[:2]
        if c_out % groups or options.kept(c_in) == c_in:
            continue
        plan = plan_for_count(site.weight, kernel_energy(site.weight), groups, options.kept(c_in), options)
        pruned = outputs(masked_reference(model, [site], [plan]), images, task.batch)
        energy = weighted_energy(kernel_energy(site.weight), second_moment(site))
        cost = gains(site.node_index)[0] * relative_error(energy, plan.keep_mask(c_in))
        rows.append((site.node, cost, divergence(dense, pruned, name in CLASSIFIERS)))
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled", choices=sorted(TASKS))
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=64)
    args = parser.parse_args(argv)
    rows = measure(args.model, args.ratio, args.groups, args.inputs)
    print("| layer | data-free cost | measured |\n|---|---|---|")
    for node, cost, measured in rows:
        print(f"| {node} | {cost:.4g} | {measured:.4g} |")
    rho = spearmanr([r[1] for r in rows], [r[2] for r in rows]).statistic
    print(f"{args.model}: {len(rows)} layers, ratio {args.ratio}, G={args.groups}: Spearman rho {rho:.2f}")


if __name__ == "__main__":
    main()
