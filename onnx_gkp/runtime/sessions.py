"""onnxruntime sessions on CPU and seeded inputs: shared by analysis (shapes) and validation."""

from __future__ import annotations

import re
from typing import Callable, Hashable, Iterator, Mapping, Optional, Sequence, TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import GkpError, ValidationFailed
from ..graphs import subgraphs
from ..io.model_file import first_line, graph_inputs, serialized_size, skeleton
from ..limits import EXTERNAL_MIN, PROTOBUF_LIMIT, STRIPPED

Key = TypeVar("Key", bound=Hashable)


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


def _options(optimise: bool, threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: failures come back as one-line errors
    return options


def session(model: onnx.ModelProto, optimise: bool, threads: int = 1) -> ort.InferenceSession:
    """A CPU session; past protobuf's 2 GiB the large initializers are handed over as arrays."""
    options = _options(optimise, threads)
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


Stubs = Mapping[str, Callable[[], np.ndarray]]  # the data of a model's stub initializers, made on demand


def is_stub(tensor: onnx.TensorProto) -> bool:
    """An initializer left without its data (``load.STRIPPED``): a :data:`Stubs` mapping has it."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == STRIPPED for e in tensor.external_data
    )


def filled(model: onnx.ModelProto, stubs: Stubs) -> onnx.ModelProto:
    """A copy of ``model`` whose stub initializers hold their data from ``stubs``."""
    full = onnx.ModelProto()
    full.CopyFrom(model)
    for tensor in full.graph.initializer:
        if is_stub(tensor) and tensor.name in stubs:
            tensor.CopyFrom(onnx.numpy_helper.from_array(stubs[tensor.name](), tensor.name))
    return full


class Unsplittable(Exception):
    """A value other than a tensor (a sequence, a map) flows between two parts."""


def run_in_parts(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], stubs: Stubs, part_bytes: int, extra: Sequence[str] = ()
) -> list[np.ndarray]:
    """The graph outputs and then the tensors ``extra`` of ``model``, computed a run of
    consecutive nodes at a time, optimisations off, one thread.

    Each part reads at most ``part_bytes`` of large initializers (unless one node alone reads
    more); its session is built, run and freed before the next one's, and its large
    initializers exist only meanwhile (made by ``stubs``, or read from the model). The values
    are the whole model's: with optimisations off every node runs the same kernel on the same
    inputs. Raises :class:`Unsplittable` where a non-tensor value would cross parts.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    reads = [_node_reads(node) for node in graph.node]
    parts = _parts(reads, initializers, feeds, part_bytes)
    wanted = list(dict.fromkeys([o.name for o in graph.output] + list(extra)))
    last = {name: number for number, part in enumerate(parts) for index in part for name in reads[index]}  # last reader
    values = dict(feeds)
    for number, part in enumerate(parts):
        made = {o for i in part for o in graph.node[i].output if o}
        read = set().union(*(reads[i] for i in part)) - made
        outputs = [n for n in sorted(made) if last.get(n, -1) > number or n in wanted]
        values.update(_run_part(model, part, read, outputs, values, initializers, stubs))
        for name in [n for n in values if last.get(n, -1) <= number and n not in wanted]:
            del values[name]
    for name in [n for n in wanted if n not in values]:  # an output that no node makes: an initializer
        if name not in initializers:
            raise ValidationFailed(f"onnxruntime cannot run the model: no value named {name!r}")
        tensor = initializers[name]
        values[name] = stubs[name]() if is_stub(tensor) else onnx.numpy_helper.to_array(tensor)
    return [values[n] for n in wanted]


def _parts(
    reads: list[set[str]], initializers: dict[str, onnx.TensorProto], feeds: dict[str, np.ndarray], part_bytes: int
) -> list[list[int]]:
    """Runs of consecutive node indices, each reading at most ``part_bytes`` of large initializers."""
    sizes = {name: _nbytes(t) for name, t in initializers.items()}
    parts: list[list[int]] = []
    counted: set[str] = set()
    load = 0
    for index, names in enumerate(reads):
        large = {n for n in names if n in initializers and n not in feeds and sizes[n] >= EXTERNAL_MIN} - counted
        weight = sum(sizes[n] for n in large)
        if not parts or (load + weight > part_bytes and load > 0):
            parts.append([])
            counted, load = set(), 0
        parts[-1].append(index)
        counted |= large
        load += weight
    return parts


def _run_part(
    model: onnx.ModelProto,
    part: list[int],
    read: set[str],
    outputs: list[str],
    values: dict[str, object],
    initializers: dict[str, onnx.TensorProto],
    stubs: Stubs,
) -> dict[str, np.ndarray]:
    """``outputs`` of the nodes ``part`` of ``model``, run alone on ``values``; the large
    initializers they read are handed to onnxruntime as arrays, made only now."""
    graph = model.graph
    cut = onnx.ModelProto(ir_version=model.ir_version)
    cut.opset_import.extend(model.opset_import)
    cut.functions.extend(model.functions)
    cut.graph.name = graph.name
    cut.graph.node.extend(graph.node[i] for i in part)
    names, arrays = [], []
    for name in sorted(n for n in read if n in initializers and n not in values):
        tensor = initializers[name]
        if _nbytes(tensor) < EXTERNAL_MIN and not is_stub(tensor):
            cut.graph.initializer.add().CopyFrom(tensor)
            continue
        stub = cut.graph.initializer.add(name=name, data_type=tensor.data_type, dims=tensor.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=STRIPPED)
        array = stubs[name]() if is_stub(tensor) else onnx.numpy_helper.to_array(tensor)
        names.append(name)
        arrays.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array)))
    inputs = sorted(n for n in read if n in values)
    for name in inputs:
        value = values[name]
        if not isinstance(value, np.ndarray):
            raise Unsplittable(name)
        cut.graph.input.append(
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        )
    typed = {o.name: o for o in graph.output}
    cut.graph.output.extend(typed[n] if n in typed else onnx.ValueInfoProto(name=n) for n in outputs)
    options = _options(optimise=False, threads=1)
    if names:
        options.add_external_initializers(names, arrays)
    try:
        sess = ort.InferenceSession(cut.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ValidationFailed(f"onnxruntime cannot load the model: {ort_message(error)}") from None
    found = dict(zip(outputs, run(sess, {n: values[n] for n in inputs})))
    del sess, options, arrays  # the arrays outlive the session: onnxruntime may read them in place
    return found


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the top-level initializers' data, stubs counted as if filled."""
    return sum(_nbytes(t) for t in model.graph.initializer)


def _nbytes(tensor: onnx.TensorProto) -> int:
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    return set().union(*(_node_reads(node) for node in graph.node))


def _node_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name ``node`` or one of its subgraphs reads."""
    names = set(node.input)
    for inner in subgraphs(node):
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
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [value],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    probe = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        versions = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
        reason = ort_message(error).rstrip(". ").split(". ")[-1]
        raise GkpError(
            f"onnxruntime {ort.__version__} cannot load IR version {model.ir_version} with opsets {versions}: {reason}"
        ) from None


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as error:
        raise ValidationFailed(f"onnxruntime cannot run the model: {ort_message(error)}") from None
