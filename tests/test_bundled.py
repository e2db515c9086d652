"""The bundled Fashion-MNIST ResNet end to end, as the README runs it."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import assert_close, cli, feeds_for, reference_from_report, run

from onnx_gkp.policy.gathers import REASON

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "resnet20_fashion_mnist.onnx"


@pytest.mark.parametrize("ratio", [0.375, 0.5])
def test_bundled_model_prunes_into_grouped_convs(tmp_path: Path, ratio: float) -> None:
    out, report_path = tmp_path / "pruned.onnx", tmp_path / "report.json"
    result = cli(BUNDLED, out, "--ratio", ratio, "--quality-only", "--report", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    pruned, original = onnx.load(out), onnx.load(BUNDLED)
    groups = [a.i for n in pruned.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert max(groups) > 1
    totals = report["totals"]
    assert totals["conv_macs_after"] < totals["conv_macs_before"]
    assert totals["params_after"] < totals["params_before"]
    assert report["validation"]["passed"]
    assert [s["reason"] for s in report["skipped"]] == ["too few input channels to prune (1 < 4)"]
    feeds = feeds_for(original, shapes={"input": [4, 1, 28, 28]})
    assert_close(run(pruned, feeds), run(reference_from_report(original, report), feeds))


def test_default_never_picks_a_variant_measured_slower(tmp_path: Path) -> None:
    out, report_path = tmp_path / "pruned.onnx", tmp_path / "report.json"
    result = cli(BUNDLED, out, "--ratio", "0.5", "--report", report_path, "--verbose")
    assert result.returncode == 0, result.stderr
    assert "stages: load" in result.stdout and "measure" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["validation"]["passed"]
    for layer in report["layers"]:
        chosen = layer["candidate_us"][str(layer["groups"])]
        assert chosen <= 0.97 * layer["dense_us"] + 1e-9
        assert chosen <= 1.05 * min(layer["candidate_us"].values()) + 1e-9
    gathers = REASON.split("{}")[
        0
    ]  # the layers that read through a Gather, left whole as a set where they measure no faster
    for skip in report["skipped"][1:]:
        assert skip["reason"].startswith(
            ("every grouped variant is slower here", "no grouped variant measured clearly faster", gathers)
        )
    original = onnx.load(BUNDLED)
    feeds = feeds_for(original, shapes={"input": [2, 1, 28, 28]})
    assert_close(run(onnx.load(out), feeds), run(reference_from_report(original, report), feeds))


def test_default_is_byte_identical_with_the_same_cost_table(tmp_path: Path) -> None:
    """Layer times and the end-to-end guard level are kept in the cost table, so reruns agree."""
    table = tmp_path / "costs.json"
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for out in outs:
        result = cli(BUNDLED, out, "--cost-cache", table, "--quiet")
        assert result.returncode == 0, result.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert "end-to-end guard" in table.read_text()
