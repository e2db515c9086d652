"""The README's commands and Python example run as written, one after the other, from the
repository root: the quick start gives a model that keeps its accuracy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "onnx_gkp.prune" in b]
    assert blocks, "the README shows the Python API"
    code = blocks[0].replace('"models/', f'"{ROOT}/models/')
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    report = names["report"]
    assert report.validation.passed
    assert report.totals["conv_macs_after"] < report.totals["conv_macs_before"]
    onnx.checker.check_model(onnx.load(tmp_path / "pruned.onnx"), full_check=True)


def test_readme_quick_start_keeps_the_accuracy(tmp_path: Path) -> None:
    """Every ``python -m onnx_gkp`` line of the README's shell blocks, in order, in one folder
    (so none fails because an earlier one wrote its output); the first, the calibrated quick
    start, writes a model within about a point of the original's 92.7% on the Fashion-MNIST test set
    (92.1% on the machine of the README's figures; the plan follows this machine's layer timings)."""
    import numpy as np
    import onnxruntime as ort
    from real_data import fashion_mnist

    readme = (ROOT / "README.md").read_text()
    lines = [line for block in re.findall(r"```\n(.*?)```", readme, flags=re.S) for line in block.splitlines()]
    commands = [line.split() for line in lines if line.startswith("python -m onnx_gkp ")]
    assert len(commands) >= 2, "the README shows the quick start and the data-free run"
    for command in commands:
        args = [str(ROOT / a) if a.startswith("models/") else a for a in command[3:]]
        result = subprocess.run([sys.executable, "-m", "onnx_gkp", *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    images, labels = fashion_mnist("t10k")
    session = ort.InferenceSession(str(tmp_path / commands[0][4]), providers=["CPUExecutionProvider"])
    scores = np.concatenate([session.run(None, {"input": images[i : i + 1000]})[0] for i in range(0, 10000, 1000)])
    assert np.mean(scores.argmax(axis=1) == labels) >= 0.915
