"""The README's Python example runs as written (paths resolved from the repository root)."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README shows the Python API"
    code = blocks[0].replace('"models/', f'"{ROOT}/models/')
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    pruned = onnx.load(tmp_path / "pruned.onnx")
    assert any(a.name == "group" and a.i > 1 for n in pruned.graph.node for a in n.attribute)
