"""Reading models in and writing them out, at the edges of the pipeline only.

Files are untrusted: external-data locations are checked to stay inside the model's folder
before a byte of them is read, and nothing in a model is executed. Writes are atomic: temporary
files in the target folder, renamed into place only once complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping, Optional, Union

import numpy as np
import onnx
import onnx.numpy_helper
from google.protobuf.message import DecodeError

from ..errors import GkpError
from ..graphs import attribute_graphs
from ..limits import EXTERNAL_MIN, PROTOBUF_LIMIT, STRIPPED

ModelLike = Union[onnx.ModelProto, str, os.PathLike]
ALIGN = 4096  # external tensors start on page boundaries, so runtimes can map them


def first_line(error: BaseException) -> str:
    """An exception's message reduced to one line, for one-line errors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for inner in attribute_graphs(attr):
                yield from _graph_tensors(inner)


def _external(tensor: onnx.TensorProto) -> Optional[dict[str, str]]:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {entry.key: entry.value for entry in tensor.external_data}


def _external_data_file(tensor: onnx.TensorProto, folder: Path) -> Path:
    """The file holding ``tensor``'s data, refused if it lies outside ``folder`` or is too short."""
    info = _external(tensor) or {}
    location = info.get("location", "")
    name = f"tensor {tensor.name!r}"
    if not location or os.path.isabs(location) or location.startswith(("\\", "/")):
        raise GkpError(f"{name}: external data location {location!r} is not relative to the model's folder (refused)")
    root = folder.resolve()
    target = (root / location).resolve()  # follows symlinks: a link out of the folder is caught here
    if root not in target.parents:
        raise GkpError(f"{name}: external data {location!r} lies outside the model's folder (refused)")
    if not target.is_file():
        raise GkpError(f"{name}: external data file {location!r} is missing")
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
    except ValueError:
        raise GkpError(f"{name}: external data offset/length are not integers") from None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise GkpError(f"{name}: unknown data type {tensor.data_type}") from None
    needed = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    if length >= 0 and length != needed and tensor.data_type != onnx.TensorProto.STRING:
        raise GkpError(f"{name}: external data of {length} bytes for a shape that needs {needed}")
    if offset < 0 or offset + needed > target.stat().st_size:
        raise GkpError(f"{name}: external data file {location!r} is shorter than the tensor it should hold")
    return target


def input_files(path: Path) -> set[Path]:
    """The model file and every external data file it names (checked as in :func:`load_model`)."""
    model = _parse(path)
    return {path.resolve()} | {_external_data_file(t, path.parent) for t in _graph_tensors(model.graph) if _external(t)}


def _parse(path: Path) -> onnx.ModelProto:
    """The protobuf of ``path`` without its external data, or a one-line refusal."""
    if not path.exists():
        raise GkpError(f"{path}: no such file")
    if not path.is_file():
        raise GkpError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise GkpError(f"{path}: empty file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as error:
        raise GkpError(f"{path}: not an ONNX model ({first_line(error)})") from None
    if not model.graph.node:
        raise GkpError(f"{path}: not an ONNX model (its graph has no nodes)")
    return model


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A checked private copy of ``model`` (a ModelProto or a path); the caller's is untouched.

    External data is read only after every location is known to stay inside the model's folder.
    """
    if isinstance(model, onnx.ModelProto):
        loaded, where, folder = onnx.ModelProto(), "model", None
        loaded.CopyFrom(model)
        if not loaded.graph.node:
            raise GkpError("model: not an ONNX model (its graph has no nodes)")
    else:
        folder = Path(model).parent
        loaded, where = _parse(Path(model)), str(model)
    external = [t for t in _graph_tensors(loaded.graph) if _external(t)]
    if external and folder is None:
        raise GkpError(f"model: tensor {external[0].name!r} keeps its data in an external file; pass the model's path")
    if external:
        for tensor in external:
            _external_data_file(tensor, folder)
        try:
            onnx.load_external_data_for_model(loaded, str(folder))
        except (OSError, ValueError, onnx.checker.ValidationError) as error:
            raise GkpError(f"{where}: cannot read its external data ({first_line(error)})") from None
    upgrade_ir3(loaded)
    check_onnx(loaded, where, full=True)  # types and shapes too: a model it rejects is bad input
    return loaded


def upgrade_ir3(model: onnx.ModelProto) -> None:
    """Bring an IR version 1-3 model to IR 4, in place: its initializers stop being graph inputs.

    Before IR 4 every initializer had to be listed as a graph input too (several old exporters
    did not list them, which onnxruntime runs anyway and onnx.checker refuses). Listed, they
    would be inputs a caller could override, so not constants the pass may prune; and the
    rewrite writes initializers that are not inputs, which an IR 3 file may not hold. IR 4 says
    what these files mean: fixed weights. Opsets and everything else are left as they were.
    """
    if not 1 <= model.ir_version < 4:
        return
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 4


def check_onnx(model: onnx.ModelProto, where: str = "model", full: bool = False) -> None:
    """onnx.checker on the model's skeleton (works past protobuf's 2 GiB); GkpError if invalid."""
    light, stripped = skeleton(model)
    # The checker would look for the stripped tensors' files: it sees them as typed inputs instead.
    names = {t.name for t in stripped}
    kept = [t for t in light.graph.initializer if t.name not in names]
    del light.graph.initializer[:]
    light.graph.initializer.extend(kept)
    listed = {i.name for i in light.graph.input}
    light.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in stripped if t.name not in listed
    )
    try:
        onnx.checker.check_model(light, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as error:
        raise GkpError(f"{where}: invalid ONNX model ({first_line(error)})") from None


def skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """A copy of ``model`` whose large initializers carry no data (marked external), and those
    initializers as they are in ``model``.

    Small enough to serialise whatever the weights weigh: for the checker, shape inference,
    onnxruntime (fed the arrays separately), hashing and writing external data.
    """
    return _without(model, lambda t: t.HasField("raw_data") and t.ByteSize() >= EXTERNAL_MIN)


def release(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` without the data of the initializers ``arrays`` already holds, so a
    large model is not in memory twice once ``model`` is dropped; :func:`restored` puts it back.

    A copy, not an edit: protobuf frees a message's bytes only with the whole message.
    """
    return _without(model, lambda t: t.name in arrays)[0]


def restored(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of a model :func:`release` emptied, with its data back."""
    full = onnx.ModelProto()
    full.CopyFrom(model)
    for tensor in full.graph.initializer:
        if tensor.name in arrays:
            tensor.CopyFrom(onnx.numpy_helper.from_array(arrays[tensor.name], tensor.name))
    return full


def _without(
    model: onnx.ModelProto, drop: Callable[[onnx.TensorProto], bool]
) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """A copy of ``model`` whose initializers chosen by ``drop`` are data-less stubs, and those."""
    light = onnx.ModelProto()
    for descriptor, value in model.ListFields():
        if descriptor.name != "graph":
            _copy_field(light, descriptor.name, value)
    for descriptor, value in model.graph.ListFields():
        if descriptor.name != "initializer":
            _copy_field(light.graph, descriptor.name, value)
    stripped = []
    for tensor in model.graph.initializer:
        if drop(tensor):
            stub = light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            stub.external_data.add(key="location", value=STRIPPED)
            stripped.append(tensor)
        else:
            light.graph.initializer.add().CopyFrom(tensor)
    return light, stripped


def _copy_field(target: object, name: str, value: object) -> None:
    if hasattr(value, "extend"):  # a repeated field
        getattr(target, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # a message
        getattr(target, name).CopyFrom(value)
    else:
        setattr(target, name, value)


def digest(model: onnx.ModelProto) -> str:
    """sha256 of the model's content, without serialising it whole."""
    light, stripped = skeleton(model)
    hasher = hashlib.sha256(light.SerializeToString())
    for tensor in stripped:
        hasher.update(tensor.raw_data)
    return hasher.hexdigest()


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes ``model`` would serialise to (``ByteSize`` itself fails past 2 GiB)."""
    light, stripped = skeleton(model)
    return light.ByteSize() + sum(t.ByteSize() for t in stripped)


def data_path(target: Path) -> Path:
    """Where the external data of a model written to ``target`` goes."""
    return target.with_name(f"{target.name}.data")


def check_target(target: Path, force: bool, inputs: frozenset[Path] = frozenset()) -> None:
    """Refuse an output path that exists (without ``force``), is an input, or cannot be written."""
    folder = target.parent if str(target.parent) else Path(".")
    if target.exists() and (target.resolve() in inputs or any(target.samefile(i) for i in inputs if i.exists())):
        raise GkpError(f"{target}: is an input of this run; name another output (inputs are never modified)")
    if target.is_dir():
        raise GkpError(f"{target}: is a folder")
    if target.exists() and not force:
        raise GkpError(f"{target}: exists (use --force to overwrite)")
    if not folder.is_dir():
        raise GkpError(f"{folder}: no such folder for the output")
    with _temporary(target):  # the one honest test of writability, root included
        pass


@contextmanager
def _temporary(target: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new temporary file next to ``target``, removed on any exit unless renamed away."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise GkpError(f"{target}: cannot write ({error.strerror})") from None
    temp = Path(name)
    try:
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private; the output is an ordinary file
        with os.fdopen(handle, "wb") as stream:
            yield stream, temp
    except OSError as error:
        raise GkpError(f"{target}: cannot write ({error.strerror or first_line(error)})") from None
    finally:
        temp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(target: Path, data: bytes) -> None:
    """``target`` holds ``data`` in full, or is left as it was."""
    with _temporary(target) as (stream, temp):
        stream.write(data)
        stream.flush()
        os.replace(temp, target)


def save_model(
    model: onnx.ModelProto, path: Union[str, os.PathLike], force: bool = False, external_data: Optional[bool] = None
) -> None:
    """Write atomically, the weights in ``PATH.data`` if ``external_data`` (by default: only when
    the model would pass protobuf's 2 GiB limit). Byte-identical for identical models."""
    target = Path(path)
    external = serialized_size(model) > PROTOBUF_LIMIT if external_data is None else external_data
    check_target(target, force)
    if not external:
        write_atomic(target, model.SerializeToString())
        return
    store = data_path(target)
    check_target(store, force)
    light, stripped = skeleton(model)
    stubs = {t.name: t for t in light.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    with _temporary(store) as (stream, temp_data):
        for tensor in stripped:
            offset = -stream.tell() % ALIGN + stream.tell()
            stream.write(b"\0" * (offset - stream.tell()))
            stream.write(tensor.raw_data)
            stub = stubs[tensor.name]
            del stub.external_data[:]
            for key, value in (("location", store.name), ("offset", offset), ("length", len(tensor.raw_data))):
                stub.external_data.add(key=key, value=str(value))
        stream.flush()
        with _temporary(target) as (model_stream, temp_model):
            model_stream.write(light.SerializeToString())
            model_stream.flush()
            _replace_pair(temp_model, target, temp_data, store)


def _replace_pair(temp_model: Path, target: Path, temp_data: Path, store: Path) -> None:
    """Put a complete model and its data file in place so that no moment, whatever kills the
    process between two steps, shows a model beside data it was not written with.

    The model file is what a loader opens first and what names the data, so it goes last and
    the old one goes first: (1) the old ``target`` is removed, (2) the new data renamed over
    ``store``, (3) the new model renamed to ``target``. Killed after (1) or (2), the folder holds
    no model (at worst a lone ``.data``, which loads as nothing); after (3), the new pair. An
    old model never meets new data (with the order reversed it would: a pair that loads, passes
    the checker and computes something else). The price is that a kill mid-way loses the old
    output, which ``--force`` was asked to replace anyway. Names and bytes do not depend on the
    order, so the output stays byte-identical for the same input.
    """
    if target.is_symlink() or target.exists():
        target.unlink()
    os.replace(temp_data, store)
    os.replace(temp_model, target)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs are not among them)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]
