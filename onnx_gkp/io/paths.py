"""The files of one run: every path it writes checked against every path it reads, and against
each other, before any work.

Read: IN, every external data file IN names, ``--calibration``, the cost cache. Written: OUT,
``OUT.data``, ``--report``, ``--plot``, the cost cache. The cost cache is both: it may be none
of the others. A written path is refused if it is a read path or another written path (the
same path, a symlink or a hard link to it), a folder, in a missing or unwritable folder, or
(except the cost cache, which is meant to be rewritten) if it exists without ``--force``. The
cost cache must be a regular file where it exists: a FIFO, a device or a folder there is
refused, not replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence

import onnx

from ..errors import GkpError
from .model_file import check_target, data_path, input_files
from .samples import IMAGE_SUFFIXES


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file: equal once resolved (symlinks followed), or one inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_cache_path(path: Path) -> None:
    """Refuse a cost cache that exists and is not a regular file (it would be replaced)."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise GkpError(f"{path}: the cost cache is {kind}; give --cost-cache a JSON file")


def calibration_files(calibration: object) -> set[Path]:
    """The files ``calibration`` names: a ``.npz``/``.npy`` file, or the images of a folder
    (none for arrays given in memory)."""
    if calibration is None or isinstance(calibration, Mapping):
        return set()
    path = Path(calibration)  # type: ignore[arg-type]
    if path.is_dir():
        return {p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    return {path}


def check_prune_paths(model: object, calibration: object, cost_cache: object) -> Path:
    """The API's one written file, before any work: the cost cache (given, or the default) is
    none of the files ``prune`` reads (the model and its external data when ``model`` is a
    path, the calibration file or images) and, where it exists, a regular file. Returns it as
    a Path."""
    cache = Path(cost_cache)  # type: ignore[arg-type]
    reads = set() if isinstance(model, onnx.ModelProto) else input_files(Path(model))  # type: ignore[arg-type]
    check_cache_path(cache)
    _distinct([("cost_cache", cache)], reads | calibration_files(calibration))
    return cache


def check_run_paths(
    source: Path,
    output: Path,
    *,
    force: bool = False,
    external: bool = False,
    report: Optional[Path] = None,
    plot: Optional[Path] = None,
    cost_cache: Optional[Path] = None,
    inputs: Sequence[Optional[Path]] = (),
) -> None:
    """GkpError, before any work, for a run that would overwrite an input or one of its own files;
    ``inputs`` are the other files it reads (``--calibration``, a folder of images too; ``--apply``)."""
    reads = set(input_files(source))
    for path in inputs:
        reads |= calibration_files(path)
    written: list[tuple[str, Path]] = [("OUT", output), ("OUT.data", data_path(output))]
    written += [(name, path) for name, path in (("--report", report), ("--plot", plot)) if path is not None]
    if cost_cache is not None:
        check_cache_path(cost_cache)
        written.append(("--cost-cache", cost_cache))
    _distinct(written, reads)
    for name, path in written:
        if name != "--cost-cache" and (name != "OUT.data" or external):
            check_target(path, force, frozenset(reads))


def _distinct(written: Sequence[tuple[str, Path]], reads: set[Path]) -> None:
    for i, (name, path) in enumerate(written):
        if any(same_file(path, r) for r in reads):
            raise GkpError(f"{path}: is an input of this run; name another {name} (inputs are never modified)")
        for other, earlier in written[:i]:
            if same_file(path, earlier):
                raise GkpError(f"{path}: would be written as both {other} and {name}; name them apart")
