"""Which INT8 types to ship: each of ``quantize.TYPES`` on the original, speed and fidelity.

The original of each model quantized with every type the pass can choose, on the task's
calibration inputs; timed side by side in one
process (one thread, batch 1, interleaved, median) and scored on the task's evaluation inputs,
which calibration never sees. On a CPU without VNNI the uint8 x int8 kernels saturate their
16-bit pair sums; 7-bit weights (u8s7) avoid it.

    python tools/bench_int8_types.py --models bundled,mobilenet_v2_photos [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime as ort
from bench_common import ROOT, load_model, write_section
from bench_quality import TASKS, scored

from onnx_gkp.cost.table import cpu_name
from onnx_gkp.runtime.quantize import quantized
from onnx_gkp.runtime.timing import median_latency_ms
from onnx_gkp.ship.int8 import TYPES


def _cpu() -> str:
    """The CPU's name and whether it has VNNI (the int8 dot products without saturation)."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        flags = []
    vnni = [f for f in ("avx512_vnni", "avx_vnni") if f in flags]
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{cpu_name()}, {'with ' + ' and '.join(vnni) if vnni else 'no VNNI'}, {isa}"


def bench(name: str, samples: int, runs: int) -> str:
    """One table row: the speed-up over fp32 and the fidelity of each type on ``name``."""
    task = TASKS[name]
    original, _ = load_model(task.zoo or name)
    data = {original.graph.input[0].name: task.calibration(samples)}
    types = list(TYPES)
    models = {"fp32": original, **{t: quantized(original, data, t) for t in types}}
    ms = median_latency_ms(models, {k: v[:1] for k, v in data.items()}, runs)
    scores = scored(task, original, models)
    cells = [f"{ms['fp32'] / ms[t]:.2f}x; {scores[t]}" for t in types]
    row = f"| {name} | {task.metric_name} | " + " | ".join(cells) + " |"
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="bundled,mobilenet_v2_photos", help=f"comma-separated, of: {', '.join(TASKS)}"
    )
    parser.add_argument("--samples", type=int, default=384, help="calibration samples")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--write", action="store_true", help="put the table in docs/results.md")
    args = parser.parse_args()
    types = list(TYPES)
    header = [
        f"**INT8 types on this CPU** (`python tools/bench_int8_types.py --models {args.models} --samples "
        f"{args.samples}`; "
        f"{_cpu()}; onnxruntime {ort.__version__}, QDQ, per-channel weights, MinMax ranges over the {args.samples} "
        f"calibration samples; one thread, batch 1, interleaved, median of {args.runs}; speed-up over fp32; fidelity "
        "against fp32 on the evaluation inputs)",
        "",
        "| model | fidelity | " + " | ".join(types) + " |",
        "|---|---|" + "---|" * len(types),
    ]
    rows = [bench(name, args.samples, args.runs) for name in args.models.split(",")]
    text = "\n".join(header + rows)
    print(text)
    if args.write:
        write_section(ROOT / "docs" / "results.md", "bench-int8-types", text)


if __name__ == "__main__":
    main()
