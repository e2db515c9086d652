"""Hostile and awkward model files and folders for the hostile-input tests (test_hostile.py,
test_hostile_runs.py): the chain model written whole, stamped, with damaged inline or external
data, with an op or a graph onnxruntime refuses, with impossible shapes; special files; and a
byte-for-byte snapshot of a folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model
from onnx import helper


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (symlinks as their target name) and its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path)] = path.read_bytes()
    return found


def chain(folder: Path, name: str = "chain.onnx") -> Path:
    path = folder / name
    onnx.save(make_model(CHAIN, CHAIN_WEIGHTS), path)
    return path


def stamped(folder: Path, ir_version: int, opset: int) -> Path:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.ir_version = model.ir_version if ir_version is None else ir_version
    model.opset_import[0].version = opset
    path = folder / "stamped.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def with_external(
    folder: Path, location: Optional[str] = None, length: Optional[int] = None, data_type: int = 0
) -> Path:
    """The chain model with its weights in ``chain.onnx.data``; ``location``/``length`` then
    rewritten in the model file (as a hostile file would carry them)."""
    folder.mkdir(exist_ok=True)
    path = folder / "chain.onnx"
    onnx.save(
        make_model(CHAIN, CHAIN_WEIGHTS), path, save_as_external_data=True, location="chain.onnx.data", size_threshold=0
    )
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        tensor.data_type = data_type or tensor.data_type
        for entry in tensor.external_data:
            if entry.key == "location" and location is not None:
                entry.value = location
            if entry.key == "length" and length is not None:
                entry.value = str(length)
    path.write_bytes(model.SerializeToString())
    return path


def custom_op(folder: Path) -> Path:
    model = onnx.parser.parse_model(
        CHAIN.replace('"" : 17]', '"" : 17, "com.example" : 1]').replace("r = Relu(a)", "r = com.example.Mystery (a)")
    )
    model.graph.initializer.extend(make_model(CHAIN, CHAIN_WEIGHTS).graph.initializer)
    path = folder / "custom.onnx"
    onnx.save(model, path)
    return path


def symlink_out(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\x00" * 65536)
    path = with_external(folder / "model", location="w.data")
    (folder / "model" / "w.data").symlink_to(outside / "secret.bin")
    return path


def _truncate(path: Path) -> Path:
    data = path.with_name("chain.onnx.data")
    data.write_bytes(data.read_bytes()[:1000])
    return path


def _short_tensor(folder: Path) -> Path:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    return _write(folder / "short.onnx", model.SerializeToString())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _edited(folder: Path, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The chain model with initializer ``name`` replaced by ``edit`` of it."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(onnx.numpy_helper.from_array(edit(onnx.numpy_helper.to_array(tensor)).astype(np.float32), name))
    return _write(folder / "edited.onnx", model.SerializeToString())


def reshape_fails(folder: Path) -> Path:
    """Valid for onnx; onnxruntime fails at run time (a Reshape to a shape fed as zeros), and
    would log its own error line before ours."""
    text = CHAIN.replace("(float[1,16,10,10] y)", "(float[1,16,10,10] y, float[7,7] q)", 1).replace(
        "y = Conv <pads=[1,1,1,1]> (r, w2)", "y = Conv <pads=[1,1,1,1]> (r, w2)\n  q = Reshape (y, s7)"
    )
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(make_model(CHAIN, CHAIN_WEIGHTS).graph.initializer)
    model.graph.input.append(helper.make_tensor_value_info("s7", onnx.TensorProto.INT64, [2]))
    return _write(folder / "reshape.onnx", model.SerializeToString())


def string_weight(folder: Path) -> Path:
    """Passes onnx.checker without full_check; a Conv cannot take a string weight."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.initializer[0].CopyFrom(
        helper.make_tensor("w1", onnx.TensorProto.STRING, [32, 8, 3, 3], [b"w"] * (32 * 8 * 9))
    )
    return _write(folder / "string.onnx", model.SerializeToString())


def huge_value_info(folder: Path) -> Path:
    """A value_info claiming 10^9 x 10^9 for a 10 x 10 tensor."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.value_info.append(helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 32, 10**9, 10**9]))
    return _write(folder / "huge_vi.onnx", model.SerializeToString())


def dynamic(folder: Path) -> Path:
    """The chain model with dynamic height and width."""
    model = make_model(
        CHAIN.replace("float[1,8,10,10] x", "float[1,8,H,W] x").replace("float[1,16,10,10] y", "float[1,16,H,W] y"),
        CHAIN_WEIGHTS,
    )
    return _write(folder / "dynamic.onnx", model.SerializeToString())


def huge_input(folder: Path) -> Path:
    """The chain model declaring a 10^6 x 10^6 input (and output): valid, but not to be allocated."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    for value in (model.graph.input[0], model.graph.output[0]):
        for axis in (2, 3):
            value.type.tensor_type.shape.dim[axis].dim_value = 10**6
    return _write(folder / "huge.onnx", model.SerializeToString())


def _device(path: Path) -> Path:
    """A character device (null's numbers) in the test's folder: never /dev/null itself, which a
    regression run as root would replace with a regular file."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here")
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path
