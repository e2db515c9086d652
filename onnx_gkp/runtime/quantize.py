"""onnxruntime's static QDQ quantization of one model with given types: the primitive both the
layer timings (layers timed as they will run) and the shipped INT8 model are made with.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx
from onnx import version_converter

from ..errors import GkpError
from ..io.model_file import first_line, serialized_size
from ..limits import PROTOBUF_LIMIT
from ..runtime.sessions import batch_size, chunks

PER_CHANNEL_OPSET = 13


class Feeder:
    """The samples in batches the model accepts; ``fed`` counts what reached the calibrator (a
    ``CalibrationDataReader`` by its ``get_next``, as onnxruntime checks readers)."""

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
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # loaded when INT8 is asked for

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
                str(prepared),
                str(target),
                feeder,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=getattr(QuantType, activations),
                weight_type=getattr(QuantType, weights),
                reduce_range=reduced,
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
    from onnxruntime.quantization import quant_pre_process

    with _inside(target.parent):  # where symbolic shape inference leaves its files when it gives up
        for symbolic in (True, False):
            try:
                quant_pre_process(
                    str(source), str(target), skip_symbolic_shape=not symbolic, save_as_external_data=large
                )
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


# activation and weight types (onnxruntime's ``QuantType`` names), and whether weights take 7 bits
TYPES = {
    "u8s8": ("QUInt8", "QInt8", False),
    "u8s7": ("QUInt8", "QInt8", True),
    "s8s8": ("QInt8", "QInt8", False),
}
