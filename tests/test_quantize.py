"""--quantize: the pruned model shipped as onnxruntime's static QDQ INT8, calibrated on every fit
sample, measured against the original quantized alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, assert_refused, chain, cli, fetched, make_model, run
from onnx import numpy_helper

import onnx_gkp
from onnx_gkp.analyse.geometry import ConvGeometry
from onnx_gkp.cost.table import CostTable
from onnx_gkp.errors import GkpError
from onnx_gkp.runtime.quantize import quantized
from onnx_gkp.ship.int8 import fastest_faithful


def _input_scale(model: onnx.ModelProto, name: str = "x") -> float:
    """The scale of the QuantizeLinear that quantizes graph input ``name``."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
    return float(inits[node.input[1]])


def test_every_calibration_sample_reaches_the_calibrator() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    samples = {"x": np.random.default_rng(0).uniform(-1, 1, (70, 8, 10, 10)).astype(np.float32)}
    samples["x"][-1, 0, 0, 0] = 51.0  # the last sample alone widens the input's range
    q = quantized(model, samples, "u8s8")
    assert _input_scale(q) == pytest.approx((51.0 - samples["x"].min()) / 255, rel=1e-3)
    assert {n.op_type for n in q.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    assert q.SerializeToString() == quantized(model, samples, "u8s8").SerializeToString(), "deterministic"


def _weights(model: onnx.ModelProto) -> list[np.ndarray]:
    """The int8 weights of a QDQ model (the quantized initializers of its Conv weights)."""
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]


def test_u8s7_keeps_the_weights_in_seven_bits() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    samples = {"x": np.random.default_rng(0).uniform(-1, 1, (16, 8, 10, 10)).astype(np.float32)}
    full, reduced = _weights(quantized(model, samples, "u8s8")), _weights(quantized(model, samples, "u8s7"))
    assert full and len(full) == len(reduced)
    assert max(int(np.abs(w).max()) for w in full) == 127
    assert max(int(np.abs(w).max()) for w in reduced) == 64 and min(int(w.min()) for w in reduced) >= -64


def test_int8_takes_the_most_faithful_of_the_types_that_run_as_fast() -> None:
    # measured on MobileNetV2 on this AVX2 CPU: 8-bit weights saturate, 7-bit ones do not, int8 activations are slow
    times = {"u8s8": 10.0, "u8s7": 10.5, "s8s8": 14.0}
    assert fastest_faithful(times, {"u8s8": 0.70, "u8s7": 0.80, "s8s8": 0.95}) == "u8s7"
    assert (
        fastest_faithful(times, {"u8s8": 0.90, "u8s7": 0.80, "s8s8": 0.95}) == "u8s8"
    )  # a VNNI CPU: 8 bits are better
    assert fastest_faithful(times, {"u8s8": 0.90, "u8s7": 0.90, "s8s8": 0.95}) == "u8s8", "a tie goes to the first"
    assert fastest_faithful({"u8s8": 12.0, "u8s7": 10.0, "s8s8": 14.0}, {k: None for k in times}) == "u8s7", (
        "no score: the fastest"
    )


def test_quantize_needs_real_inputs_and_a_known_type() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    with pytest.raises(GkpError, match="calibration"):
        onnx_gkp.prune(model, ratio=0.5, quantize="int8")
    with pytest.raises(GkpError, match="one of int8"):
        onnx_gkp.prune(model, ratio=0.5, quantize="int4", calibration={"x": np.zeros((4, 8, 10, 10), np.float32)})


def test_cli_refuses_quantize_without_calibration(tmp_path: Path) -> None:
    onnx.save(make_model(CHAIN, CHAIN_WEIGHTS), tmp_path / "in.onnx")
    assert_refused(cli(tmp_path / "in.onnx", tmp_path / "out.onnx", "--quantize", "int8"), 2, "calibration")
    assert not (tmp_path / "out.onnx").exists()


def test_int8_types_are_measured_once_and_remembered(tmp_path: Path) -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    data = {"x": np.random.default_rng(1).standard_normal((64, 8, 10, 10)).astype(np.float32)}
    cache = tmp_path / "costs.json"
    first, report = onnx_gkp.prune(
        model, ratio=0.5, groups=1, quantize="int8", calibration=data, cost_cache=cache, latency_runs=3
    )
    q = report.quantization
    assert q["types"] in ("u8s8", "u8s7", "s8s8") and q["chosen"].startswith("measured here: u8s8 ")
    assert all(f"{name} " in q["chosen"] for name in ("u8s7", "s8s8")), "every type timed and scored"
    assert set(q["latency_ms"]) == {"original", "int8 alone", "pruned", "pruned int8"}
    assert "over INT8 alone" in report.summary() and report.summary().startswith("fidelity of the INT8 model")
    for fp32_ms, int8_ms, warned in ((1.0, 2.0, True), (1.0, 0.5, False)):  # INT8 slower than fp32 happens on real CPUs
        q["latency_ms"].update({"pruned": fp32_ms, "pruned int8": int8_ms})
        assert any("slower than the pruned fp32" in line for line in report.int8_lines()) == warned
    again, report = onnx_gkp.prune(
        model, ratio=0.5, groups=1, quantize="int8", calibration=data, cost_cache=cache, latency_runs=3
    )
    assert "remembered" in report.quantization["chosen"]
    assert again.SerializeToString() == first.SerializeToString()


def test_a_real_model_ships_int8_and_keeps_its_digits() -> None:
    """The zoo's MNIST net on 256 real digits: pruned, refitted, quantized; held-out top-1 agreement."""
    pytest.importorskip("PIL", reason="the digits need the zoo extra")
    import real_data

    original = onnx.load(fetched("mnist"))
    digits = real_data.shuffled_mnist()[0][:256]
    pruned, report = onnx_gkp.prune(
        original, ratio=0.25, quantize="u8s8", calibration={"input": digits}, latency_runs=0
    )
    q = report.quantization
    assert q["types"] == "u8s8" and q["chosen"] == "given" and not q["latency_ms"]
    score = min(f["score"] for f in report.fidelity.values())
    alone = min(f["score"] for f in q["fidelity_int8_alone"].values())
    assert score >= 0.97 and alone >= 0.97, (score, alone)
    assert sum(n.op_type == "QuantizeLinear" for n in pruned.graph.node) >= 4
    held = digits[list(report.samples["held_out_index"])]
    want = run(original, {"input": held[:32]})[0].argmax(1)
    got = run(pruned, {"input": held[:32]})[0].argmax(1)
    assert np.mean(want == got) >= 0.9, "the shipped model itself still reads the digits"


def test_layers_are_timed_in_the_precision_that_ships(tmp_path: Path) -> None:
    geometry = ConvGeometry((1, 32, 14, 14), (32, 32, 3, 3), (("pads", (1, 1, 1, 1)),), "float32", True)
    table = CostTable(1, tmp_path / "costs.json")
    variants = [(1, 16, True), (1, 16, False)]
    fp32 = table.times(geometry, variants)
    table.precision = "u8s8"
    int8 = table.times(geometry, variants)
    assert table.measured == 6, "int8 figures are measured apart from the fp32 ones"
    assert all(0 < t < 1 for t in [*fp32.values(), *int8.values()])
    table.save()
    keys = json.loads((tmp_path / "costs.json").read_text())
    assert sum(" | u8s8 | " in k for k in keys) == 3 and sum(" | u8s8 | " not in k for k in keys) == 3


WIDE, WIDE_WEIGHTS = chain(32, 128, 128, 24)


def test_a_latency_target_under_quantize_is_measured_against_int8_alone(tmp_path: Path, monkeypatch) -> None:
    # wide enough that pruning pays in int8 (a 32-channel chain measured 1.04 of INT8 alone at its most pruning)
    compared: list[dict[str, onnx.ModelProto]] = []
    real = onnx_gkp.context.median_latency_ms

    def spy(models, *args, **kwargs):
        compared.append(dict(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(onnx_gkp.context, "median_latency_ms", spy)
    model = make_model(WIDE, WIDE_WEIGHTS)
    data = {"x": np.random.default_rng(1).standard_normal((64, 32, 24, 24)).astype(np.float32)}
    pruned, report = onnx_gkp.prune(
        model, target_latency=0.9, quantize="u8s8", calibration=data, cost_cache=tmp_path / "costs.json", latency_runs=5
    )
    assert report.quantization["types"] == "u8s8" and report.validation.passed
    assert any(" | u8s8 | " in key for key in json.loads((tmp_path / "costs.json").read_text())), "layers timed in int8"
    targets = [m for m in compared if set(m) == {"reference", "pruned"}]
    assert targets, "the target was measured end to end"
    for m in targets:
        assert all(any(n.op_type == "QuantizeLinear" for n in v.graph.node) for v in m.values()), "both sides int8"
        assert sorted(w.shape for w in _weights(m["reference"]) if w.ndim == 4) == sorted(
            WIDE_WEIGHTS[k] for k in ("w1", "w2")
        ), "against the original quantized alone"
    assert "target: at most 0.90 of the original's time; measured" in report.summary()
    assert sum(n.op_type == "QuantizeLinear" for n in pruned.graph.node) >= 2
