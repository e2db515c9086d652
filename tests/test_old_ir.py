"""IR version 3 models: accepted (upgraded to IR 4 on load), and the output valid under onnx.checker.

IR 3 wanted every initializer listed as a graph input; some old exporters did not list them
(onnxruntime runs those, onnx.checker refuses them). The onnx wheel ships real IR 3 models under
``onnx/backend/test/data/light/`` (their weights made at run time by ConstantOfShape, so nothing
is pruned in them: they test that such a file goes through whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, assert_close, cli, feeds_for, make_model, reference_from_report, run

import onnx_gkp

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def ir3_chain(listed: bool) -> onnx.ModelProto:
    """The chain model stamped IR 3, its initializers listed as graph inputs (as IR 3 wants) or not."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.ir_version = 3
    model.opset_import[0].version = 9
    if listed:
        model.graph.input.extend(
            onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer
        )
    return model


@pytest.mark.parametrize("listed", [True, False], ids=["initializers listed as inputs", "not listed"])
def test_ir3_models_are_pruned_and_written_valid(listed: bool, tmp_path: Path) -> None:
    original = ir3_chain(listed)
    source, out = tmp_path / "ir3.onnx", tmp_path / "out.onnx"
    source.write_bytes(original.SerializeToString())
    result = cli(source, out, "--quality-only", "--ratio", "0.5", "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "pruned 2 Conv" in result.stdout
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert written.ir_version == 4 and [i.name for i in written.graph.input] == ["x"]
    report = json.loads((tmp_path / "r.json").read_text())
    reference = reference_from_report(make_model(CHAIN, CHAIN_WEIGHTS), report)
    feeds = feeds_for(written)
    assert_close(run(written, feeds), run(reference, feeds))


@pytest.mark.skipif(not (LIGHT / "light_squeezenet.onnx").exists(), reason="this onnx wheel ships no light models")
def test_light_squeezenet_from_the_onnx_wheel(tmp_path: Path) -> None:
    source, out = LIGHT / "light_squeezenet.onnx", tmp_path / "out.onnx"
    assert onnx.load(source, load_external_data=False).ir_version == 3
    result = cli(source, out, "--quality-only")
    assert result.returncode == 0, result.stderr
    assert "exactness passed" in result.stdout
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    _, report = onnx_gkp.prune(source, runtime_aware=False, latency_runs=0)
    convs = [s for s in report.skipped if s.op_type == "Conv"]
    assert convs and all("not a constant" in s.reason for s in convs)  # ConstantOfShape weights
    feeds = {"data_0": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    assert_close(run(written, feeds), run(onnx.load(source), feeds))
