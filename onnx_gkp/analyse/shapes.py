"""Input shapes to test at, every tensor's static shape (shape inference, or one onnxruntime run
where it gives up), and the MACs they imply.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import onnx

from ..errors import GkpError, ValidationFailed
from ..io.model_file import first_line, graph_inputs, skeleton
from ..runtime.sessions import random_inputs, run, session, with_outputs
from .ops import CONV_LIKE


def resolve_input_shapes(
    model: onnx.ModelProto, test_shapes: Optional[dict[str, tuple[int, ...]]] = None
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input: given test shapes, else static dims, batch 1 if dynamic."""
    test_shapes = dict(test_shapes or {})
    shapes = {}
    for value in graph_inputs(model):
        if value.name in test_shapes:
            shapes[value.name] = tuple(int(d) for d in test_shapes.pop(value.name))
            _check_test_shape(value, shapes[value.name])
            continue
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            raise GkpError(f"input {value.name!r} has no tensor shape; give --test-shape {value.name}:d0,d1,...")
        dims = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif axis == 0:
                dims.append(1)
            else:
                name = dim.dim_param or "?"
                raise GkpError(
                    f"input {value.name!r} has dynamic dim {axis} ({name}); give --test-shape {value.name}:d0,d1,..."
                )
        shapes[value.name] = tuple(dims)
    if test_shapes:
        raise GkpError(f"--test-shape names no model input: {', '.join(sorted(test_shapes))}")
    for name, shape in shapes.items():
        check_input_size(name, shape)
    return shapes


def _check_test_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    """Refuse a test shape of another rank than the input's, or differing from a static dim."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return
    dims = value.type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in dims]
    if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(declared, shape)):
        raise GkpError(
            f"--test-shape {value.name}:{','.join(map(str, shape))} does not fit the input's declared "
            f"shape [{', '.join(map(str, declared))}]"
        )


def check_input_size(name: str, shape: tuple[int, ...]) -> None:
    """Refuse, before any array is made, an input whose float64 copy (random inputs are drawn in
    float64, outputs compared in float64) would take more than half this machine's memory."""
    needed = math.prod(shape) * 8
    if needed > memory_bytes() // 2:
        raise GkpError(
            f"input {name!r} at shape {list(shape)} needs {needed / 2**30:.3g} GiB per float64 copy, more than "
            f"half this machine's memory ({memory_bytes() / 2**30:.3g} GiB); give a smaller --test-shape"
        )


def memory_bytes() -> int:
    """Physical memory of this machine (1 TiB where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**40


def inferred_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor ONNX shape inference can resolve at the test shapes."""
    fixed = skeleton(model)[0]  # the weights are not needed, and may pass protobuf's limit
    for value in fixed.graph.input:
        if value.name in input_shapes:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in input_shapes[value.name]:
                shape.dim.add().dim_value = d
    try:
        fixed = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as error:
        raise GkpError(f"shape inference failed: {first_line(error)}") from None
    shapes = {}
    for value in list(fixed.graph.value_info) + list(fixed.graph.output) + list(fixed.graph.input):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    ends = [name for n in model.graph.node if n.op_type in CONV_LIKE for name in (n.input[0], n.output[0])]
    missing = [name for name in dict.fromkeys(ends) if name not in shapes]
    if missing:
        shapes.update(measured_shapes(model, input_shapes, missing))
    return shapes


def measured_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]], names: list[str]
) -> dict[str, tuple[int, ...]]:
    """Shapes of ``names`` read off one onnxruntime run, where static inference gave up.

    Empty if the model cannot run (an unknown op, say): MACs then stay unknown.
    """
    probe = with_outputs(model, names)
    try:
        outputs = run(session(probe, optimise=False), random_inputs(probe, input_shapes))
    except ValidationFailed:
        return {}
    produced = dict(zip([o.name for o in probe.graph.output], outputs))
    return {n: tuple(produced[n].shape) for n in names}


def conv_macs(weight_shape: tuple[int, ...], output_shape: Optional[tuple[int, ...]]) -> Optional[int]:
    """Multiply-accumulates of one sample: ``C_out * C_in/group * prod(k) * prod(out spatial)``."""
    if output_shape is None:
        return None
    return int(math.prod(weight_shape) * math.prod(output_shape[2:]))


def kept_macs(macs: Optional[int], kept: int, of: int) -> Optional[int]:
    """A Conv's MACs with ``kept`` of ``of`` kernels (filters times inputs per filter) left:
    MACs are linear in each."""
    return None if macs is None else macs * kept // of
