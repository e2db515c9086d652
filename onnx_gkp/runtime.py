"""onnxruntime sessions on CPU and seeded inputs: shared by analysis (shapes) and validation."""

from __future__ import annotations

import re
import statistics
import time
from typing import Hashable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from .errors import GkpError, ValidationFailed
from .load import PROTOBUF_LIMIT, first_line, serialized_size, skeleton

Key = TypeVar("Key", bound=Hashable)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs are not among them)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` (after its own outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in known)
    return probe


def up_to(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``names``: its outputs, and the nodes they need."""
    wanted, needed = set(names), []
    for node in reversed(model.graph.node):
        if wanted.intersection(node.output):
            needed.append(node)
            wanted.update(n for n in node.input if n)
    used = {n for node in needed for n in node.input}
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[:], cut.graph.output[:]
    cut.graph.node.extend(reversed(needed))
    kept = [t for t in model.graph.initializer if t.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(kept)
    cut.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return cut


def chunks(data: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    count = next(iter(data.values())).shape[0]
    for start in range(0, count, size):
        yield {name: array[start : start + size] for name, array in data.items()}


def batch_size(model: onnx.ModelProto, chunk: int) -> int:
    """``chunk``, or the model's fixed batch size if it has one (it then runs at nothing else)."""
    fixed = [v.type.tensor_type.shape.dim[0].dim_value for v in graph_inputs(model) if v.type.tensor_type.shape.dim]
    return min([chunk] + [b for b in fixed if b > 0])


def random_inputs(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0, values: Optional[dict[str, float]] = None
) -> dict[str, np.ndarray]:
    """Seeded standard-normal feeds for float inputs, zeros for others, at the given shapes;
    ``values`` fills the inputs it names with one value instead (a sample rate, a flag)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    values = values or {}
    for value in graph_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = shapes[value.name]
        if value.name in values:
            feeds[value.name] = np.full(shape, values[value.name], dtype=dtype)
        elif np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype=dtype)
    return feeds


def session(model: onnx.ModelProto, optimise: bool, threads: int = 1) -> ort.InferenceSession:
    """A CPU session; past protobuf's 2 GiB the large initializers are handed over as arrays."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: failures come back as one-line errors
    arrays: list[ort.OrtValue] = []
    if serialized_size(model) > PROTOBUF_LIMIT:
        model, stripped = skeleton(model)
        read = _read_names(model.graph)  # onnxruntime drops unread initializers, then cannot replace them
        kept = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL or t.name in read]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        stripped = [t for t in stripped if t.name in read]
        arrays = [ort.OrtValue.ortvalue_from_numpy(onnx.numpy_helper.to_array(t)) for t in stripped]
        options.add_external_initializers([t.name for t in stripped], arrays)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types here
        raise ValidationFailed(f"onnxruntime cannot load the model: {ort_message(error)}") from None
    sess.gkp_arrays = arrays  # type: ignore[attr-defined]  # onnxruntime reads them in place: keep them alive
    return sess


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for inner in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _read_names(inner)
    return names


def ort_message(error: BaseException) -> str:
    """onnxruntime's message without its C++ source location and signature."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (\S+:\d+ [^(]*\([^)]*\) )?", "", first_line(error))


def check_supported(model: onnx.ModelProto) -> None:
    """Refuse a model whose IR version or opsets this onnxruntime cannot load, whatever its ops.

    Probed with an empty model stamped like ``model``: validation, timing and shape probes all
    need onnxruntime, so this is bad input (exit 2), not a failed validation.
    """
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    probe = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        versions = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
        reason = ort_message(error).rstrip(". ").split(". ")[-1]
        raise GkpError(f"onnxruntime {ort.__version__} cannot load IR version {model.ir_version} "
                       f"with opsets {versions}: {reason}") from None


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as error:
        raise ValidationFailed(f"onnxruntime cannot run the model: {ort_message(error)}") from None


def interleaved_medians(
    sessions: dict[Key, ort.InferenceSession], feeds: dict[str, np.ndarray], rounds: int
) -> dict[Key, float]:
    """Median seconds per run of each session, runs interleaved so drift hits all of them alike."""
    times: dict[Key, list[float]] = {key: [] for key in sessions}
    for _ in range(rounds):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feeds)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def median_latency_ms(
    models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], runs: int, threads: int = 1
) -> dict[str, float]:
    """Median wall time per run of each model, interleaved run by run."""
    sessions = {name: session(m, optimise=True, threads=threads) for name, m in models.items()}
    for sess in sessions.values():
        run(sess, feeds)
    return {name: round(1000 * t, 4) for name, t in interleaved_medians(sessions, feeds, runs).items()}
