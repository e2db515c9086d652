"""Reading models in and writing them out, at the edges of the pipeline only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError

from .errors import GkpError

ModelLike = Union[onnx.ModelProto, str, os.PathLike]


def first_line(error: BaseException) -> str:
    """An exception's message reduced to one line, for one-line errors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A checked private copy of ``model`` (a ModelProto or a path); the caller's is untouched."""
    if isinstance(model, onnx.ModelProto):
        loaded = onnx.ModelProto()
        loaded.CopyFrom(model)
        where = "model"
    else:
        path = Path(model)
        where = str(path)
        if not path.exists():
            raise GkpError(f"{path}: no such file")
        if not path.is_file():
            raise GkpError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise GkpError(f"{path}: empty file")
        try:
            loaded = onnx.load(str(path))
        except (DecodeError, ValueError, RuntimeError, OSError) as error:
            raise GkpError(f"{path}: not an ONNX model ({first_line(error)})") from None
    if not loaded.graph.node:
        raise GkpError(f"{where}: not an ONNX model (its graph has no nodes)")
    try:
        onnx.checker.check_model(loaded)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise GkpError(f"{where}: invalid ONNX model ({first_line(error)})") from None
    return loaded


def save_model(model: onnx.ModelProto, path: Union[str, os.PathLike], force: bool = False) -> None:
    """Write atomically: a temporary file in the target folder, renamed into place on success."""
    target = Path(path)
    if target.exists() and not force:
        raise GkpError(f"{target}: exists (use --force to overwrite)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise GkpError(f"{folder}: no such folder for the output")
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise GkpError(f"{target}: cannot write ({error.strerror})") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(model.SerializeToString())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
