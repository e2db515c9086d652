"""The code keeps the house style: ruff's lint and format checks, as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["onnx_gkp", "tests", "tools", "models"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command: list[str]) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")  # the venv's first
    assert ruff is not None, "ruff is in the test extra: pip install -e '.[test]'"
    result = subprocess.run([ruff, *command, "--no-cache", *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
