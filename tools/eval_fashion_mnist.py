"""One-shot quality on real data: prune the bundled model and score it on Fashion-MNIST.

Prints a table (method, ratio, Conv MACs kept, top-1 on the 10,000 test images, agreement with
the unpruned model, onnxruntime speed-up at batch 1 on one thread measured side by side with
the original, the group counts chosen) for the flexible count and fixed counts.
No fine-tuning, no calibration: what the pass does to a trained model on its own.

Usage: python tools/eval_fashion_mnist.py [--model models/resnet20_fashion_mnist.onnx]
       [--ratios 0.25,0.375,0.5] [--groups auto,quality,1,2,4,8] [--criteria l2,gm,combined]
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnx_gkp
from onnx_gkp.validate import median_latency_ms
from real_data import fashion_mnist as load_split

ROOT = Path(__file__).resolve().parents[1]


def predict(model: onnx.ModelProto, images: np.ndarray, batch: int = 500) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i : i + batch]})[0].argmax(1) for i in range(0, len(images), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "resnet20_fashion_mnist.onnx")
    parser.add_argument("--ratios", default="0.25,0.375,0.5")
    parser.add_argument("--groups", default="auto,quality,1,2,4,8", help="auto (default, runtime-aware), quality (auto, quality-only), or fixed counts")
    parser.add_argument("--criteria", default="combined", help="kernel criteria to compare, comma-separated")
    parser.add_argument("--group-cost", type=float, default=0.05)
    parser.add_argument("--max-groups", type=int, default=16)
    parser.add_argument("--latency-runs", type=int, default=200)
    args = parser.parse_args()

    images, labels = load_split("t10k")
    original = onnx.load(args.model)
    dense = predict(original, images)
    print(f"unpruned: top-1 {np.mean(dense == labels):.4f}")
    one = {"input": images[:1]}
    print(f"{'criterion':>9} {'groups':>6} {'ratio':>6} {'MACs kept':>9} {'top-1':>6} {'agree':>6} {'speed-up':>8}  chosen G (count)")
    for ratio in (float(r) for r in args.ratios.split(",")):
        for groups, criterion in itertools.product(args.groups.split(","), args.criteria.split(",")):
            g = "auto" if groups in ("auto", "quality") else int(groups)
            pruned, report = onnx_gkp.prune(
                original, ratio=ratio, groups=g, criterion=criterion, group_cost=args.group_cost,
                max_groups=args.max_groups, latency_runs=0, runtime_aware=groups != "quality",
            )
            pred = predict(pruned, images)
            t = report.totals
            chosen = Counter(layer.groups for layer in report.layers)
            ms = median_latency_ms({"original": original, "pruned": pruned}, one, args.latency_runs)
            print(f"{criterion:>9} {groups:>6} {ratio:>6} {t['conv_macs_after'] / t['conv_macs_before']:>9.3f} "
                  f"{np.mean(pred == labels):>6.4f} {np.mean(pred == dense):>6.4f} {ms['original'] / ms['pruned']:>7.2f}x  "
                  + ", ".join(f"{k}:{v}" for k, v in sorted(chosen.items())), flush=True)


if __name__ == "__main__":
    main()
