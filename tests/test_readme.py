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
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    report = names["report"]
    assert report.validation.passed
    assert report.totals["conv_macs_after"] < report.totals["conv_macs_before"]
    onnx.checker.check_model(onnx.load(tmp_path / "pruned.onnx"), full_check=True)
