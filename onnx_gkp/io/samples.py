"""Real inputs for the pass: read them (``.npz``, ``.npy``, a folder of images), check them, split them.

The samples are split once, by a seeded permutation, into a *fit* part (refits, per-layer
error curves) and a *held-out* part (every fidelity figure, and the exactness check's feeds).
Held out: a quarter of the samples, at least 32 where there are 64 or more, half below that.

Files are untrusted: array sizes are read from the headers and refused past ``MAX_BYTES``
before anything is decompressed, nothing is unpickled, and non-finite samples are refused (a
refit fed NaN or 1e30 would compute nonsense that still matches its own masked reference).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from ..errors import GkpError
from .model_file import first_line, graph_inputs

Calibration = Union[Mapping[str, np.ndarray], str, os.PathLike]
MAX_BYTES = 4 << 30  # one calibration array may hold at most this much, decompressed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Preprocess:
    """How a folder of images becomes model inputs: resized to ``size`` (H, W), scaled to [0, 1]
    (``scale``), then ``(x - mean) / std`` per channel, in ``order`` (RGB or BGR) and ``layout``.
    An array of 8-bit pixels (``uint8``) for a float input is scaled and normalised alike."""

    size: Optional[tuple[int, int]] = None  # default: the model input's fixed H and W
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1 / 255

    def __post_init__(self) -> None:
        if self.order not in ("RGB", "BGR", "L"):
            raise GkpError(f"channel order must be RGB, BGR or L, not {self.order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise GkpError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(s) and s > 0 for s in self.std):
            raise GkpError("mean must be finite and std positive")


@dataclass(frozen=True)
class Samples:
    """The fit and held-out parts, arrays named like the model's inputs; ``held_index`` records
    which samples (in the order given) were held out, for the report."""

    fit: dict[str, np.ndarray]
    held: dict[str, np.ndarray]
    held_index: tuple[int, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {"fit": _count(self.fit), "held_out": _count(self.held)}


def held_out_count(total: int) -> int:
    """A quarter, at least 32 where there are 64 or more samples, half below that."""
    return max(total // 4, 32) if total >= 64 else total // 2


def held_in(held: int) -> int:
    """The fewest samples of which ``held_out_count`` holds out at least ``held``."""
    return next(total for total in range(2, 4 * held + 4) if held_out_count(total) >= held)


def split(data: dict[str, np.ndarray], seed: int) -> Samples:
    """Seeded split into fit and held-out parts (a file sorted by class splits evenly too)."""
    total = _count(data)
    if total < 2:
        raise GkpError(f"calibration data needs at least 2 samples (one to fit, one to hold out), got {total}")
    order = np.random.default_rng([seed, 4919]).permutation(total)
    held = np.sort(order[: held_out_count(total)])
    fit = np.sort(order[held_out_count(total) :])
    return Samples(
        fit={k: v[fit] for k, v in data.items()},
        held={k: v[held] for k, v in data.items()},
        held_index=tuple(int(i) for i in held),
    )


def load_samples(
    data: Calibration, model: onnx.ModelProto, preprocess: Optional[Preprocess] = None
) -> dict[str, np.ndarray]:
    """Arrays named like the model's inputs, samples along the first axis, all of one count.

    ``data`` is a mapping, a ``.npz`` (arrays named like the inputs), a ``.npy`` (the one input's
    samples) or a folder of images (the one input, through ``preprocess``).
    """
    inputs = graph_inputs(model)
    if not isinstance(data, Mapping):
        path = Path(data)
        if path.is_dir():
            data = {_only(inputs, path).name: _images(path, _only(inputs, path), preprocess or Preprocess())}
        elif path.suffix.lower() == ".npy":
            data = {_only(inputs, path).name: _read_npy(path)}
        else:
            data = _read_npz(path)
    arrays = {}
    for value in inputs:
        if value.name not in data:
            raise GkpError(f"calibration data has no array named {value.name!r} (a model input)")
        arrays[value.name] = _checked(value, _pixels(value, np.asarray(data[value.name]), preprocess or Preprocess()))
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise GkpError(f"calibration arrays must hold the same, non-zero number of samples (got {sorted(counts)})")
    return arrays


def _count(data: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(data.values())).shape[0])


def _only(inputs: Sequence[onnx.ValueInfoProto], path: Path) -> onnx.ValueInfoProto:
    if len(inputs) != 1:
        raise GkpError(
            f"{path}: one array or folder feeds one input; this model has {len(inputs)} (give an .npz named like them)"
        )
    return inputs[0]


def _pixels(value: onnx.ValueInfoProto, array: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """``uint8`` samples for a float input are pixels, prepared as images are: scaled to [0, 1],
    then ``(x - mean) / std`` along the channel axis of ``layout``; other arrays as they are."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    if array.dtype != np.uint8 or not np.issubdtype(dtype, np.floating) or array.ndim < 2:
        return array
    axis = -1 if preprocess.layout == "NHWC" else 1
    if {len(preprocess.mean), len(preprocess.std)} - {1, array.shape[axis]}:
        raise GkpError(f"--mean and --std take 1 or {array.shape[axis]} values for {value.name!r}'s channels")
    shape = [1] * array.ndim
    shape[axis] = -1
    mean, std = (np.asarray(v, np.float32).reshape(shape) for v in (preprocess.mean, preprocess.std))
    return (array.astype(np.float32) * np.float32(preprocess.scale) - mean) / std


def _checked(value: onnx.ValueInfoProto, array: np.ndarray) -> np.ndarray:
    """The array in the input's dtype, refused on rank, fixed dims, kind or non-finite values."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if array.ndim != len(dims):
        raise GkpError(f"calibration array {value.name!r} has rank {array.ndim}; the model input has rank {len(dims)}")
    if any(want and got != want for want, got in zip(dims[1:], array.shape[1:])):
        raise GkpError(
            f"calibration array {value.name!r} has samples of shape {list(array.shape[1:])}; "
            f"the model input wants {dims[1:]}"
        )
    if array.dtype.kind not in "biuf":
        raise GkpError(f"calibration array {value.name!r} holds {array.dtype}, not numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise GkpError(f"calibration array {value.name!r} holds NaN or infinite values")
    with np.errstate(over="ignore"):
        converted = array.astype(dtype, copy=False)
    if np.issubdtype(dtype, np.floating) and not np.isfinite(converted).all():
        raise GkpError(f"calibration array {value.name!r} overflows {np.dtype(dtype).name}")
    return converted


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            _bounded(path.name, f)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise GkpError(f"{path}: not a readable .npy array ({first_line(error)})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    _bounded(info.filename, member)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise GkpError(f"{path}: not a readable .npz of calibration arrays ({first_line(error)})") from None


def _bounded(name: str, stream: BinaryIO) -> None:
    """Refuse an array whose header claims more than ``MAX_BYTES``, before its data is read."""
    major, _ = np.lib.format.read_magic(stream)
    header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = header(stream)
    size = int(np.prod([int(d) for d in shape], dtype=object)) * np.dtype(dtype).itemsize
    if size > MAX_BYTES:
        raise GkpError(f"calibration array {name} would take {size / 2**30:.1f} GiB (at most {MAX_BYTES >> 30} GiB)")


def _images(folder: Path, value: onnx.ValueInfoProto, preprocess: Preprocess) -> np.ndarray:
    """Every image of ``folder`` (sorted by name), preprocessed into one input's samples."""
    try:
        from PIL import Image
    except ImportError:
        raise GkpError("a folder of images needs Pillow: pip install pillow") from None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise GkpError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise GkpError(f"a folder of images feeds a 4-D input; {value.name!r} has rank {len(dims)}")
    height, width = dims[1:3] if preprocess.layout == "NHWC" else dims[2:4]
    size = preprocess.size or (height, width)
    if not all(size):
        raise GkpError(f"input {value.name!r} has no fixed height and width: give the image size")
    mode = "L" if preprocess.order == "L" else "RGB"
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                picture = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise GkpError(f"{path}: not a readable image ({first_line(error)})") from None
        array = np.asarray(picture, np.float32).reshape(size[0], size[1], -1) * preprocess.scale
        if preprocess.order == "BGR":
            array = array[:, :, ::-1]
        array = (array - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)
        images.append(array if preprocess.layout == "NHWC" else array.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(images))
