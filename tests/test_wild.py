"""Kinds of graph met in models no one here wrote, run through the whole CLI and validated:
where no real model can be had, a small one built with the feature.

- Convs read inside ``If`` branches, the branch chosen by an integer scalar input (a sample
  rate, as voice-activity models have), with a side output that is NaN in places (a Sqrt, as a
  pitch model's confidence output fed noise is): ``--input-value`` picks the branch, for the
  exactness check and for the latency runs alike.
- An IR 3 model from the onnx wheel with its weights as initializers not listed as graph
  inputs (``light_squeezenet``'s own weights are made at run time, so nothing is pruned in it
  as shipped, ``test_old_ir.py``).
- silero VAD (a real voice-activity model, from a pinned wheel, ``tools/zoo.py``): every Conv
  inside ``If`` branches, an ``int64`` sample-rate input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cli, make_model, reference_from_report, run
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from zoo import GRAPHS, fetch_graph  # noqa: E402

VOICE = """
<ir_version: 8, opset_import: ["" : 17]>
voice (float[1,8,10,10] x, int64 sr) => (float[1,16,10,10] y, float[1,32,10,10] z, float[1,16,10,10] pitch) {
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu (a)
  c = Conv <pads=[1,1,1,1]> (r, w2)
  rate = Constant <value = int64 {16000}> ()
  wide = Equal (sr, rate)
  y, z = If (wide) <then_branch = g1 () => (float[1,16,10,10] t, float[1,32,10,10] u) { t = Relu (c)
      u = Sigmoid (a) },
    else_branch = g2 () => (float[1,16,H,W] e, float[1,32,10,10] n) { bad = Shape (a)
      e = Reshape (c, bad)
      n = Neg (a) }>
  pitch = Sqrt (c)
}
"""
VOICE_WEIGHTS = {"w1": (32, 8, 3, 3), "b1": (32,), "w2": (16, 32, 3, 3)}


def _equal_nan(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for a, b in zip(got, want):
        scale = float(np.nanmax(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale + 1e-5, equal_nan=True)


def test_if_on_an_integer_input_with_a_nan_output(tmp_path: Path) -> None:
    original = make_model(VOICE, VOICE_WEIGHTS)
    source, out, report = tmp_path / "voice.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(original, source)
    # sr fed 0 by default takes the branch that cannot run at this size: the original cannot, so
    # no check could pass. Said in one line before any work, pointing at --input-value; exit 2.
    refused = cli(source, out, "--quality-only", "--ratio", "0.5")
    assert refused.returncode == 2 and "original model cannot run on the check's inputs" in refused.stderr, (
        refused.stderr
    )
    assert "--input-value" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1 and not out.exists()
    # The sample rate given: exactness checked, and latency measured (20 runs), on that branch.
    result = cli(source, out, "--quality-only", "--ratio", "0.5", "--input-value", "sr=16000", "--report", report)
    assert result.returncode == 0, result.stderr
    assert "pruned 2 Conv" in result.stdout and "exactness passed" in result.stdout
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    data = json.loads(report.read_text())
    assert data["validation"]["passed"] and data["validation"]["latency_ms"]
    reference = reference_from_report(original, data)
    x = np.random.default_rng(5).standard_normal((1, 8, 10, 10)).astype(np.float32)
    feeds = {"x": x, "sr": np.array(16000, np.int64)}
    got = run(written, feeds)
    assert np.isnan(got[2]).any() and not np.isnan(got[2]).all()  # the side output is NaN in places
    _equal_nan(got, run(reference, feeds))


LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"


def light_with_weights() -> onnx.ModelProto:
    """light_squeezenet (IR 3), each ConstantOfShape weight replaced by a seeded random
    initializer of its shape, and no initializer listed as a graph input (as some old
    exporters wrote, against IR 3's rule)."""
    model = onnx.load(LIGHT)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    nodes = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = tuple(int(d) for d in constants[node.input[0]])
            scale = np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
            model.graph.initializer.append(
                numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), node.output[0])
            )
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    weights = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(weights)
    inputs = [i for i in model.graph.input if i.name == "data_0"]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


@pytest.mark.skipif(not LIGHT.exists(), reason="this onnx wheel ships no light models")
def test_ir3_squeezenet_from_the_onnx_wheel_is_pruned(tmp_path: Path) -> None:
    original = light_with_weights()
    assert original.ir_version == 3 and {i.name for i in original.graph.input} == {"data_0"}
    source, out, report = tmp_path / "squeezenet.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(original, source)
    result = cli(source, out, "--quality-only", "--ratio", "0.25", "--report", report)
    assert result.returncode == 0, result.stderr
    assert "exactness passed" in result.stdout
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert written.ir_version >= 4
    data = json.loads(report.read_text())
    assert len(data["layers"]) >= 10
    feeds = {"data_0": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    _equal_nan(run(written, feeds), run(reference_from_report(original, data), feeds))


def test_silero_vad(tmp_path: Path) -> None:
    """Every Conv inside If branches: nothing pruned, said so, and the model written whole and
    checked on the 16 kHz branch (a 576-sample window with its context, as the package feeds it)."""
    try:
        source = fetch_graph("silero_vad")
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:  # no registry here: nothing to test against
        pytest.skip(f"silero_vad could not be fetched: {error}")
    out = tmp_path / "out.onnx"
    result = cli(source, out, *GRAPHS["silero_vad"].args)
    assert result.returncode == 0, result.stderr
    assert "nothing was pruned" in result.stdout and "exactness passed" in result.stdout
    rng = np.random.default_rng(0)
    feeds = {
        "input": (rng.standard_normal((1, 576)) * 0.1).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }
    _equal_nan(run(onnx.load(out), feeds), run(onnx.load(source), feeds))
