"""Layers whose rewrite keeps an input Gather (a residual stream's readers) are pruned only where
that measures faster end to end, as the model ships; the decision is remembered."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import make_model

import onnx_gkp
from onnx_gkp.context import Context
from onnx_gkp.policy.gathers import GATHER_GAIN

# The stream s is read by Conv b and by the Add: b keeps a Gather. c reads b alone: b is trimmed
# for it. a reads the graph input and d the Add: both keep a Gather.
RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
residual (float[1,16,16,16] x) => (float[1,64,16,16] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  s = Relu(a)
  b = Conv <pads=[1,1,1,1]> (s, wb)
  r = Relu(b)
  c = Conv <pads=[1,1,1,1]> (r, wc)
  t = Add(s, c)
  y = Conv <pads=[1,1,1,1]> (t, wd)
}
"""
WEIGHTS = {"wa": (64, 16, 3, 3), "wb": (64, 64, 3, 3), "wc": (64, 64, 3, 3), "wd": (64, 64, 3, 3)}


def _gathered(model: onnx.ModelProto) -> set[str]:
    """The outputs of the Convs that read a Gather."""
    gathers = {n.output[0] for n in model.graph.node if n.op_type == "Gather"}
    return {n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.input[0] in gathers}


def _pruned(
    model: onnx.ModelProto, cache: Path, ratio: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[onnx.ModelProto, object]:
    """The model pruned at 0.5 with the end-to-end comparison measuring ``ratio`` (with over without)."""
    monkeypatch.setattr(Context, "shipped_time_ratio", lambda self, first, second, runs: ratio)
    return onnx_gkp.prune(model, ratio=0.5, cost_cache=cache, latency_runs=3)


def test_gathered_layers_stay_pruned_only_where_they_pay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(RESIDUAL, WEIGHTS)
    paying, report = _pruned(model, tmp_path / "paying.json", 1.0 - 2 * GATHER_GAIN, monkeypatch)
    gathered = _gathered(paying)
    pruned = {layer.node_index for layer in report.layers}
    if not gathered or len(gathered) == len(pruned):
        pytest.skip(
            f"this machine's layer timings left no mix of gathered and trimmed layers to choose between: {pruned}"
        )
    assert "c" not in gathered and report.plan.decisions["input_gathers"]["layers"] == len(gathered)

    tied, report = _pruned(model, tmp_path / "tied.json", 1.0 - GATHER_GAIN / 2, monkeypatch)
    assert not _gathered(tied) and not any(n.op_type == "Gather" for n in tied.graph.node)
    whole = {s.node_index for s in report.skipped if "input Gather" in s.reason}
    assert len(whole) == len(gathered) and {layer.node_index for layer in report.layers} == pruned - whole
    assert report.validation.passed

    monkeypatch.setattr(Context, "shipped_time_ratio", lambda *_: pytest.fail("remembered, not measured again"))
    again, _ = onnx_gkp.prune(model, ratio=0.5, cost_cache=tmp_path / "tied.json", latency_runs=3)
    assert again.SerializeToString() == tied.SerializeToString()


def test_the_comparison_is_timed_as_the_model_ships(tmp_path: Path) -> None:
    """Without a stub: both models assembled and timed; the figure is recorded in the plan."""
    model = make_model(RESIDUAL, WEIGHTS)
    pruned, report = onnx_gkp.prune(model, ratio=0.5, cost_cache=tmp_path / "costs.json", latency_runs=3)
    decided = report.plan.decisions.get("input_gathers")
    if decided is None:
        pytest.skip("this machine's layer timings left no mix of gathered and trimmed layers to choose between")
    assert decided["time_with_over_without"] > 0 and report.validation.passed
    assert (
        onnx_gkp.prune(model, ratio=0.5, cost_cache=tmp_path / "costs.json", latency_runs=3)[0].SerializeToString()
        == pruned.SerializeToString()
    )
