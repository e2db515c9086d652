"""A plan is the whole plan: applied again from its JSON, it gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, cli, make_model

import onnx_gkp

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "resnet20_fashion_mnist.onnx"


def replayed(model: object, report: onnx_gkp.Report) -> onnx.ModelProto:
    """The model applied from the report's JSON text, as a user would keep it."""
    return onnx_gkp.apply(model, onnx_gkp.Plan.from_dict(json.loads(report.to_json())))


@pytest.mark.parametrize(
    "options",
    [
        {"ratio": 0.5},
        {"ratio": 0.375, "groups": 4},
        {"target_macs": 0.3},
        {"ratio": 0.5, "runtime_aware": False},
    ],
)
def test_the_bundled_plan_applies_again_to_the_same_bytes(options: dict) -> None:
    pruned, report = onnx_gkp.prune(BUNDLED, latency_runs=0, **options)
    assert report.layers, "something was pruned"
    assert replayed(BUNDLED, report).SerializeToString() == pruned.SerializeToString()


def test_refitted_weights_travel_in_the_plan_exactly() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    data = {"x": np.random.default_rng(3).normal(size=(64, 8, 10, 10)).astype(np.float32)}
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=2, calibration=data, latency_runs=0)
    refitted = [layer for layer in report.plan.layers if layer.weight is not None]
    assert refitted, "calibration refitted a layer"
    assert "refitted_kept_weight" in json.dumps(report.to_dict()["plan"])
    assert replayed(model, report).SerializeToString() == pruned.SerializeToString()


def test_plan_json_round_trips() -> None:
    _, report = onnx_gkp.prune(BUNDLED, ratio=0.5, latency_runs=0)
    once = report.plan.to_dict()
    assert onnx_gkp.Plan.from_dict(json.loads(json.dumps(once))).to_dict() == once
    assert once["decisions"] == {"end_to_end_guard": 0.0}, "the guard's level is on record"


def test_a_plan_for_another_model_or_a_damaged_one_is_refused() -> None:
    _, report = onnx_gkp.prune(BUNDLED, ratio=0.5, latency_runs=0)
    with pytest.raises(onnx_gkp.GkpError, match="another model"):
        onnx_gkp.apply(make_model(CHAIN, CHAIN_WEIGHTS), report.plan)
    broken = report.plan.to_dict()
    del broken["layers"][0]["kept_channels"]
    with pytest.raises(onnx_gkp.GkpError, match="damaged"):
        onnx_gkp.Plan.from_dict(broken)
    with pytest.raises(onnx_gkp.GkpError, match="not a pruning plan"):
        onnx_gkp.Plan.from_dict({"layers": []})


def test_cli_applies_a_report_and_refuses_mixed_options(tmp_path: Path) -> None:
    first, again, report = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "r.json"
    assert cli(BUNDLED, first, "--ratio", "0.5", "--report", report, "--quiet").returncode == 0
    result = cli(BUNDLED, again, "--apply", report, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "exactness passed" in result.stdout
    assert again.read_bytes() == first.read_bytes()
    mixed = cli(BUNDLED, tmp_path / "c.onnx", "--apply", report, "--ratio", "0.5")
    assert mixed.returncode == 2 and "as it is" in mixed.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = cli(BUNDLED, tmp_path / "d.onnx", "--apply", tmp_path / "bad.json")
    assert bad.returncode == 2 and "cannot read the plan" in bad.stderr
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "d.onnx").exists()


def test_a_macs_target_rewrites_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """MACs come from the plan (its trims included), so the budget's bisection needs no rewrite."""
    import onnx_gkp.rewrite.model as applying

    calls = []
    real = applying.rewrite
    monkeypatch.setattr(applying, "rewrite", lambda *a, **k: calls.append(1) or real(*a, **k))
    pruned, report = onnx_gkp.prune(BUNDLED, target_macs=0.3, latency_runs=0)
    assert len(calls) == 1
    removed = 1 - report.totals["conv_macs_after"] / report.totals["conv_macs_before"]
    assert 0.3 <= removed <= 0.31
    assert report.plan.trims, "a G = 1 layer trims its source on this model"


def test_trims_that_the_layers_do_not_imply_are_refused() -> None:
    _, report = onnx_gkp.prune(BUNDLED, ratio=0.5, groups=1, latency_runs=0)
    edited = report.plan.to_dict()
    node = next(iter(edited["trims"]))
    edited["trims"][node]["kept"] = edited["trims"][node]["kept"][::-1]
    with pytest.raises(onnx_gkp.GkpError, match="trims"):
        onnx_gkp.apply(BUNDLED, onnx_gkp.Plan.from_dict(edited))
