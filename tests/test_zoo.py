"""Real third-party models (``tools/zoo.py``) prune and validate end to end with the defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnx_gkp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from zoo import MODELS, fetch  # noqa: E402

from conftest import assert_close, feeds_for, reference_from_report, run  # noqa: E402


def _fetched(name: str) -> Path:
    try:
        return fetch(name)
    except (subprocess.CalledProcessError, OSError) as error:  # no registry: nothing to test against
        pytest.skip(f"{name} could not be fetched: {error}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_model_prunes_and_validates(name: str) -> None:
    entry = MODELS[name]
    original = onnx.load(_fetched(name))
    pruned, report = onnx_gkp.prune(original, test_shapes=entry.test_shapes or None, latency_runs=10)
    data = report.to_dict()
    assert data["validation"]["passed"]
    assert all(np.isfinite(c) for c in data["validation"]["output_cosine"].values())
    assert data["skipped"], "every zoo model has Convs that must be left alone (stem, depthwise, ...)"
    assert all(s["reason"] for s in data["skipped"])
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {k: list(v) for k, v in entry.test_shapes.items()}
    feeds = feeds_for(original, shapes=shapes)
    assert_close(run(pruned, feeds), run(reference_from_report(original, data), feeds), rtol=1e-3)
