"""INT8 after pruning: onnxruntime's static quantization, on the same calibration inputs.

The pruned model is quantized the way a user quantizes the original (``quant_pre_process``,
``quantize_static``, QDQ, per-channel int8 weights, MinMax ranges over every fit sample), so
"pruned + INT8" and "INT8 alone" differ only by the pruning. Which types run faster, and which
keep the model, depends on the CPU: uint8 activations ran 1.3-2.6x faster than fp32 here, int8
ones no faster; and on a CPU without VNNI (AVX2) the uint8 x int8 kernels sum pairs of products
in 16 bits, which saturates: MobileNetV2's top-1 agreement fell to 0.68 with 8-bit weights and
stayed at 0.77 with 7-bit ones (``reduce_range``, ``u8s7``), at the same speed
(``docs/results.md``). So ``int8`` measures every type on the original, speed side by side and
fidelity on the held-out samples, and takes the most faithful of those that run as fast.

The MinMax calibrator keeps one min and max per tensor per batch, so every sample is fed;
``CalibMaxIntermediateOutputs`` is not used (onnxruntime's GitHub issue 18893: it drops collected batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import onnx

from ..io.model_file import digest
from ..runtime.quantize import TYPES, quantized
from ..runtime.timing import median_latency_ms

if TYPE_CHECKING:  # costs.py times layers quantized with quantized() below
    from ..cost.table import CostTable

# activations, weights, weights in 7 bits (no 16-bit saturation in the AVX2 kernels)
AS_FAST = 1.10  # a type this much slower than the fastest still counts as fast: timing noise on a shared CPU
CHOICES = (
    "int8",
    *TYPES,
)  # int8: the most faithful of TYPES that runs the quantized original as fast as the fastest here


@dataclass(frozen=True)
class Int8:
    """The activation/weight types the run ships, why, and the original quantized with them."""

    types: str
    reason: str
    alone: onnx.ModelProto
    fit: dict[str, np.ndarray] = field(repr=False, compare=False)

    def shipped(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` quantized as the original was."""
        return quantized(model, self.fit, self.types)


def int8_original(
    requested: str,
    original: onnx.ModelProto,
    fit: dict[str, np.ndarray],
    feeds: dict[str, np.ndarray],
    costs: "CostTable",
    threads: int,
    runs: int,
    score: Callable[[onnx.ModelProto], Optional[float]],
) -> Int8:
    """The original quantized with the ``requested`` types, or for ``int8`` with each of ``TYPES``,
    timed side by side here and scored by ``score`` (held-out fidelity, higher is better): the
    most faithful of the types within ``AS_FAST`` of the fastest. The choice is remembered in the
    cost table with the figures, so a rerun ships the same bytes."""
    if requested != "int8":
        return Int8(requested, "given", quantized(original, fit, requested), fit)
    decision = f"int8 types {'/'.join(TYPES)} | {digest(original)}"  # an index into TYPES
    names = list(TYPES)
    recalled = costs.recall(decision)
    if recalled is not None and 0 <= int(recalled) < len(names):
        types = names[int(recalled)]
        return Int8(types, "measured here (remembered in the cost cache)", quantized(original, fit, types), fit)
    models = {name: quantized(original, fit, name) for name in names}
    # u8s8 and u8s7 run the same kernels, yet measured up to 7% apart: 30 runs at least
    times = median_latency_ms(models, feeds, max(runs, 30), threads)
    scores = {name: score(model) for name, model in models.items()}
    types = fastest_faithful(times, scores)
    costs.remember(decision, float(names.index(types)))
    costs.save()
    measured = ", ".join(
        f"{name} {times[name]:.3f} ms" + ("" if scores[name] is None else f" at {scores[name]:.4g}") for name in names
    )
    return Int8(types, f"measured here: {measured}", models[types], fit)


def fastest_faithful(times: dict[str, float], scores: dict[str, Optional[float]]) -> str:
    """Of the types that run within ``AS_FAST`` of the fastest, the one with the best score
    (the earlier in ``times`` on a tie; without scores, the fastest)."""
    fastest = min(times.values())
    fast = [name for name in times if times[name] <= AS_FAST * fastest]
    if any(scores[name] is None for name in fast):
        return min(fast, key=lambda name: times[name])
    return max(fast, key=lambda name: (scores[name], -list(times).index(name)))  # type: ignore[return-value]
