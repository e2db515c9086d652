"""The command line through a subprocess: exit codes, one-line errors, nothing written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, assert_refused, cli, make_model


@pytest.fixture
def chain_path(tmp_path: Path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(make_model(CHAIN, CHAIN_WEIGHTS), path)
    return path


def test_prune_writes_model_and_report(chain_path: Path, tmp_path: Path) -> None:
    before = chain_path.read_bytes()
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = cli(chain_path, out, "--ratio", "0.5", "--groups", "2", "--report", report)
    assert result.returncode == 0, result.stderr
    assert "exactness passed" in result.stdout and "kept/group" in result.stdout
    assert chain_path.read_bytes() == before
    onnx.checker.check_model(onnx.load(out), full_check=True)
    data = json.loads(report.read_text())
    assert set(data) == {
        "options",
        "input_shapes",
        "layers",
        "skipped",
        "totals",
        "timings_s",
        "validation",
        "fidelity",
        "samples",
        "search",
        "quantization",
        "plan",
        "calibration_checks",
    }
    layer = data["layers"][0]
    for key in (
        "node",
        "node_index",
        "weight_shape",
        "groups",
        "kept_per_group",
        "filter_groups",
        "kept_channels",
        "macs_before",
        "macs_after",
        "params_before",
        "params_after",
    ):
        assert key in layer
    assert set(data["validation"]) >= {"masked_max_abs_diff", "inputs", "latency_ms", "onnxruntime"}
    assert data["options"]["seed"] == 0 and data["options"]["groups"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_same_seed_gives_identical_bytes(chain_path: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli(chain_path, a, "--seed", "4", "--no-validate").returncode == 0
    assert cli(chain_path, b, "--seed", "4", "--no-validate").returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_existing_output_needs_force(chain_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"keep me")
    assert_refused(cli(chain_path, out), 2, "exists")
    assert out.read_bytes() == b"keep me"
    assert cli(chain_path, out, "--force", "--no-validate").returncode == 0
    assert onnx.load(out).graph.node


@pytest.mark.parametrize(
    "args,words",
    [
        (["--ratio", "1.5"], "ratio"),
        (["--ratio", "x"], "--ratio"),
        (["--groups", "0"], "--groups"),
        (["--groups", "3"], "divides"),
        (["--include", "("], "pattern"),
        (["--test-shape", "nope"], "--test-shape"),
        (["--test-shape", "y:1,2"], "names no model input"),
        (["--criterion", "best"], "criterion"),
    ],
)
def test_bad_options(chain_path: Path, tmp_path: Path, args: list, words: str) -> None:
    out = tmp_path / "out.onnx"
    assert_refused(cli(chain_path, out, *args), 2, words)
    assert not out.exists()


DYNAMIC = """
<ir_version: 8, opset_import: ["" : 17]>
dyn (float[N,8,H,W] x) => (float[N,16,H,W] y) {
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu(a)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}
"""


def test_dynamic_dims_need_a_test_shape(tmp_path: Path) -> None:
    path, out = tmp_path / "dyn.onnx", tmp_path / "out.onnx"
    onnx.save(make_model(DYNAMIC, CHAIN_WEIGHTS), path)
    assert_refused(cli(path, out), 2, "--test-shape x:")
    result = cli(path, out, "--test-shape", "x:2,8,12,9")
    assert result.returncode == 0, result.stderr
    dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["N", "", "H", "W"]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("onnx-gkp")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--groups" in result.stdout


def test_plot_draws_every_conv(chain_path: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "out.onnx", tmp_path / "plot.html"
    result = cli(chain_path, out, "--ratio", "0.5", "--groups", "2", "--plot", plot)
    assert result.returncode == 0, result.stderr
    page = plot.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert page.count('fill="#36c"') == 2 and page.count("G=2, keeps 50% of inputs") == 2


def test_plot_refuses_other_formats_before_doing_anything(chain_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    result = cli(chain_path, out, "--plot", tmp_path / "plot.png")
    assert result.returncode == 2 and "--plot writes .html or .svg" in result.stderr
    assert not out.exists()
