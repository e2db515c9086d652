"""What the benchmarks share: the models they run on, and their sections of ``docs/results.md``."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from zoo import MODELS as ZOO  # noqa: E402
from zoo import fetch  # noqa: E402

from models.shapes import BUILDERS  # noqa: E402

BUNDLED = ROOT / "models" / "resnet20_fashion_mnist.onnx"
assert not set(BUILDERS) & set(ZOO), "a name must say whether it is a random-weight shape or a real model"


def load_model(name: str) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """A 224 shape of ``models/shapes.py``, ``bundled``, or a zoo model; with its test shapes."""
    if name in BUILDERS:
        return BUILDERS[name](), {}
    if name == "bundled":
        return onnx.load(BUNDLED), {}
    return onnx.load(fetch(name)), ZOO[name].test_shapes


def write_section(path: Path, key: str, text: str) -> None:
    """Replace the section marked ``key`` in ``path`` (or append it), leaving the rest alone."""
    old = path.read_text() if path.exists() else "# Measured results\n"
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)
