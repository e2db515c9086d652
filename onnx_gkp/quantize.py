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
``CalibMaxIntermediateOutputs`` is not used (onnxruntime issue 18893 drops collected batches).
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from .errors import GkpError
from .load import PROTOBUF_LIMIT, digest, first_line, serialized_size
from .runtime import batch_size, chunks, median_latency_ms

if TYPE_CHECKING:  # costs.py times layers quantized with quantized() below
    from .costs import CostTable

# activations, weights, weights in 7 bits (no 16-bit saturation in the AVX2 kernels)
TYPES = {
    "u8s8": (QuantType.QUInt8, QuantType.QInt8, False),
    "u8s7": (QuantType.QUInt8, QuantType.QInt8, True),
    "s8s8": (QuantType.QInt8, QuantType.QInt8, False),
}
AS_FAST = 1.10  # a type this much slower than the fastest still counts as fast: timing noise on a shared CPU
PER_CHANNEL_OPSET = 13
CHOICES = ("int8", *TYPES)  # int8: the most faithful of TYPES that runs the quantized original as fast as the fastest here


class Feeder(CalibrationDataReader):
    """The samples in batches the model accepts; ``fed`` counts what reached the calibrator."""

    def __init__(self, data: dict[str, np.ndarray], batch: int) -> None:
        self.batches = chunks(data, batch)
        self.fed = 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self.batches, None)
        if batch is not None:
            self.fed += len(next(iter(batch.values())))
        return batch


def quantized(model: onnx.ModelProto, data: dict[str, np.ndarray], types: str, prepare: bool = True) -> onnx.ModelProto:
    """``model`` quantized to QDQ with ``types`` (a key of ``TYPES``), ranges from all of ``data``;
    ``prepare`` runs onnxruntime's pre-processing first (what a user does; seconds per model)."""
    activations, weights, reduced = TYPES[types]
    model, per_channel = _per_channel_opset(model)
    large = serialized_size(model) > PROTOBUF_LIMIT
    with tempfile.TemporaryDirectory(prefix="onnx_gkp_int8_") as folder, _quiet():
        source, prepared, target = (Path(folder) / n for n in ("model.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save_model(model, source, save_as_external_data=large)
        prepared = _prepared(source, prepared, large) if prepare else source
        feeder = Feeder(data, batch_size(model, 32))
        try:
            quantize_static(
                str(prepared), str(target), feeder, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=activations, weight_type=weights, reduce_range=reduced,
                use_external_data_format=large,
            )
        except Exception as error:  # the quantizer raises many unrelated types
            raise GkpError(f"onnxruntime.quantization cannot quantize this model: {first_line(error)}") from None
        count = len(next(iter(data.values())))
        if feeder.fed != count:  # an internal error: the ranges would not be the samples'
            raise AssertionError(f"the calibrator read {feeder.fed} of {count} samples")
        return onnx.load_model(target)


def _per_channel_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``model`` at opset 13 or later, where DequantizeLinear takes the per-channel ``axis``
    (the quantizer lifts older models only to 11 and writes an invalid graph), and whether
    per-channel weights are possible; where the conversion fails, per-tensor ones."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if version >= PER_CHANNEL_OPSET:
        return model, True
    try:
        return version_converter.convert_version(model, PER_CHANNEL_OPSET), True
    except Exception:  # the converter has no adapter for some op: quantize per tensor as it is
        return model, False


def _prepared(source: Path, target: Path, large: bool) -> Path:
    """onnxruntime's pre-processing (shape inference, graph optimisation), or the model as it is
    where symbolic shape inference, then all of it, fails on a valid graph."""
    with _inside(target.parent):  # where symbolic shape inference leaves its files when it gives up
        for symbolic in (True, False):
            try:
                quant_pre_process(str(source), str(target), skip_symbolic_shape=not symbolic, save_as_external_data=large)
                return target
            except Exception:  # an optional step: quantization works without it
                continue
    return source


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """The working directory set to ``folder`` for a while: onnxruntime's symbolic shape
    inference writes ``sym_shape_infer_temp.onnx`` and its data there when it gives up."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer's advice goes to Python logging; the tool's output is its own lines."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


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
    requested: str, original: onnx.ModelProto, fit: dict[str, np.ndarray], feeds: dict[str, np.ndarray],
    costs: "CostTable", threads: int, runs: int, score: Callable[[onnx.ModelProto], Optional[float]],
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
    measured = ", ".join(f"{name} {times[name]:.3f} ms" + ("" if scores[name] is None else f" at {scores[name]:.4g}")
                         for name in names)
    return Int8(types, f"measured here: {measured}", models[types], fit)


def fastest_faithful(times: dict[str, float], scores: dict[str, Optional[float]]) -> str:
    """Of the types that run within ``AS_FAST`` of the fastest, the one with the best score
    (the earlier in ``times`` on a tie; without scores, the fastest)."""
    fastest = min(times.values())
    fast = [name for name in times if times[name] <= AS_FAST * fastest]
    if any(scores[name] is None for name in fast):
        return min(fast, key=lambda name: times[name])
    return max(fast, key=lambda name: (scores[name], -list(times).index(name)))  # type: ignore[return-value]
