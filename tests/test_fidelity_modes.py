"""What the pass does with and without real inputs: the exactness check's rules, the data-free
default, the held-out fidelity, and the --keep search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model, run
from onnx import helper, numpy_helper

import onnx_gkp
from onnx_gkp.errors import GkpError
from onnx_gkp.policy.bisection import search
from onnx_gkp.runtime.sessions import random_inputs

CLIPPED = """
<ir_version: 8, opset_import: ["" : 17]>
clipped (float[1,8,6,6] x) => (float[1,8,6,6] y) {
  a = Conv (x, w1)
  lo = Constant <value = float {0.0}> ()
  hi = Constant <value = float {1.0}> ()
  y = Clip (a, lo, hi)
}
"""


def _shifted(model: onnx.ModelProto, by: float) -> onnx.ModelProto:
    """``model`` with ``by`` added to its Conv output before the final op."""
    shifted = onnx.ModelProto()
    shifted.CopyFrom(model)
    shifted.graph.initializer.append(numpy_helper.from_array(np.array(by, np.float32), "shift"))
    shifted.graph.node.insert(1, helper.make_node("Add", ["a0", "shift"], ["a"]))
    shifted.graph.node[0].output[0] = "a0"
    return shifted


def test_a_saturated_output_is_held_to_the_precision_of_the_convs_that_feed_it() -> None:
    model = make_model(CLIPPED, {"w1": (8, 8, 1, 1)})
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(numpy_helper.to_array(model.graph.initializer[0]) * 3, "w1")
    )
    rounding, wrong = _shifted(model, 1e-3), _shifted(model, 0.5)  # 1e-3: under 1e-4 of the Conv output (~25)
    assert not onnx_gkp.validate(rounding, model, latency_runs=0).passed, "the output alone fails it"
    assert onnx_gkp.validate(rounding, model, latency_runs=0, probes=["a"]).passed
    assert not onnx_gkp.validate(wrong, model, latency_runs=0, probes=["a"]).passed


def test_nan_in_the_same_places_passes_and_a_new_nan_fails() -> None:
    text = CHAIN.replace("y = Conv <pads=[1,1,1,1]> (r, w2)", "c = Conv <pads=[1,1,1,1]> (r, w2)\n  y = Sqrt (c)")
    model = make_model(text, CHAIN_WEIGHTS)
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=2, latency_runs=0)
    assert report.validation.passed  # Sqrt of negative outputs: NaN in both models, in the same places
    assert np.isnan(run(pruned, {"x": np.ones((1, 8, 10, 10), np.float32)})[0]).any()
    wrong = _shifted(model, -1e6)
    wrong.graph.node[-1].input[0] = wrong.graph.node[-2].output[0]
    assert not onnx_gkp.validate(wrong, model, latency_runs=0).passed


def test_input_values_feed_integer_and_scalar_inputs() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.input.append(helper.make_tensor_value_info("rate", onnx.TensorProto.INT64, []))
    feeds = random_inputs(model, {"x": (1, 8, 10, 10), "rate": ()}, 0, {"rate": 16000})
    assert feeds["rate"].dtype == np.int64 and int(feeds["rate"]) == 16000
    assert int(random_inputs(model, {"x": (1, 8, 10, 10), "rate": ()}, 0)["rate"]) == 0


def _calibration(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs with correlated channels, as real ones have: 3 factors behind 8 channels."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(8, 3))
    return {"x": np.einsum("cf,nfhw->nchw", mixing, rng.normal(size=(count, 3, 10, 10))).astype(np.float32)}


def test_without_data_the_default_is_conservative_and_says_fidelity_was_not_measured() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    pruned, report = onnx_gkp.prune(model, latency_runs=0)
    assert report.options["mode"] == "data-free" and report.fidelity is None
    assert report.summary().startswith("fidelity: NOT measured")
    assert report.validation.passed and report.validation.inputs == "seeded noise"
    with pytest.raises(GkpError, match="real inputs"):
        onnx_gkp.prune(model, keep=0.9)
    with pytest.raises(GkpError, match="not both"):
        onnx_gkp.prune(model, keep=0.9, ratio=0.5, calibration=_calibration(8))


DEAD = """
<ir_version: 8, opset_import: ["" : 17]>
dead (float[1,8,10,10] x) => (float[1,16,10,10] y) {
  a = Conv <pads=[1,1,1,1]> (x, w1)
  n = BatchNormalization (a, gamma, beta, mean, var)
  r = Relu (n)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}
"""


def test_without_data_only_channels_the_statistics_call_dead_are_pruned() -> None:
    """BN statistics say four of w2's inputs are never positive (mean -10, spread 0.01), and their
    kernels are small, as weight decay leaves the kernels of a channel that never fires: the
    data-free default drops exactly those, and the output does not move. Two live channels read
    by weak kernels (an estimated error of about 1e-3 at ratio 0.375) stay: an estimate that ran
    80x low on real photos does not license that without data."""
    model = make_model(
        DEAD, {"w1": (16, 8, 3, 3), "w2": (16, 16, 3, 3), **{k: (16,) for k in ("gamma", "beta", "mean", "var")}}
    )
    dead = np.arange(16) % 4 == 1
    params = {
        "gamma": np.where(dead, 0.01, 1.0),
        "beta": np.where(dead, -10.0, 0.5),
        "mean": np.zeros(16),
        "var": np.ones(16),
    }
    for tensor in model.graph.initializer:
        if tensor.name in params:
            tensor.CopyFrom(numpy_helper.from_array(params[tensor.name].astype(np.float32), tensor.name))
        if tensor.name == "w2":
            w2 = numpy_helper.to_array(tensor).copy()
            w2[:, dead] *= 0.01
            w2[:, [2, 6]] *= 0.1
            tensor.CopyFrom(numpy_helper.from_array(w2, "w2"))
    pruned, report = onnx_gkp.prune(model, groups=1, latency_runs=0)
    assert report.options["mode"] == "data-free" and report.validation.passed
    (layer,) = [l for l in report.layers if l.kept_per_group < l.weight_shape[1]]
    assert layer.node_index == len(model.graph.node) - 1 and layer.kept_per_group == 12
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 8, 10, 10)).astype(np.float32)}
    np.testing.assert_allclose(run(pruned, feeds)[0], run(model, feeds)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep", [0.999, 0.9])
def test_keep_returns_a_model_measured_to_keep_the_target_on_held_out_samples(keep: float) -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    data = _calibration(64)
    pruned, report = onnx_gkp.prune(model, keep=keep, calibration=data, groups=1, latency_runs=0)
    assert report.options["mode"] == "keep" and report.samples["held_out"] == 32 and report.samples["fit"] == 32
    assert report.validation.passed and report.validation.inputs == "held-out samples"
    figures = report.fidelity["y"]
    assert figures["kind"] == "dense" and figures["metric"] == "cosine"
    assert figures["score"] >= keep, "the model returned keeps the target it was asked for"
    assert report.search and all(0.0 <= s["score"] <= 1.0 for s in report.search)
    held = {"x": data["x"][list(report.samples["held_out_index"])]}
    want, got = run(model, {"x": held["x"][:1]})[0], run(pruned, {"x": held["x"][:1]})[0]
    assert np.isfinite(got).all() and want.shape == got.shape
    if keep == 0.9:
        assert report.layers, "a loose target prunes"
        again, _ = onnx_gkp.prune(model, keep=keep, calibration=data, groups=1, latency_runs=0)
        assert again.SerializeToString() == pruned.SerializeToString()


def test_search_finds_the_largest_level_that_keeps_the_target() -> None:
    levels = [0.001 * i for i in range(1, 101)]
    seen = []

    def score(level: float) -> float:
        seen.append(level)
        return 1.0 - level  # falls as the allowance grows

    found, trail = search(levels, score, keep=0.95)
    assert found == pytest.approx(0.05) and len(trail) == len(seen) <= 8
    assert search(levels, lambda level: 0.5, keep=0.95)[0] is None


def test_calibration_folder_through_the_cli(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    text = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,3,12,12] x) => (float[N,16,12,12] y) {
  a = Conv <pads=[1,1,1,1]> (x, w1)
  r = Relu (a)
  y = Conv <pads=[1,1,1,1]> (r, w2)
}
"""
    model = make_model(text, {"w1": (16, 3, 3, 3), "w2": (16, 16, 3, 3)})
    onnx.save(model, tmp_path / "in.onnx")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(folder / f"{i:02}.png")
    from conftest import cli

    result = cli(
        tmp_path / "in.onnx",
        tmp_path / "out.onnx",
        "--calibration",
        folder,
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--keep",
        "0.95",
        "--report",
        tmp_path / "r.json",
    )
    assert result.returncode == 0, result.stderr
    assert any(
        line.startswith("fidelity on 6 held-out samples (target: keep 0.95): y cosine")
        for line in result.stdout.splitlines()
    )


def test_with_a_target_the_target_governs_and_a_keep_is_checked() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    _, report = onnx_gkp.prune(model, target_macs=0.5, keep=1.0, calibration=_calibration(64), latency_runs=0)
    assert report.options["mode"] == "target" and report.fidelity["y"]["score"] < 1.0
    assert "(target: keep 1, MISSED: " in report.summary().splitlines()[0]


def test_allowances_are_a_ladder_of_the_curves_values_and_buy_the_fastest_ratio_within() -> None:
    from onnx_gkp.policy.curves import GRID, levels, ratios_within

    curves = {1: (0.01, 0.02, 0.03, 0.04, 0.05, 0.06), 2: (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}
    assert levels(curves) == sorted(curves[1] + curves[2])
    assert ratios_within(curves, 0.035) == {1: GRID[2], 2: 0.0}
    times = {1: (5.0, 4.0, 6.0, 3.0, 3.05, 9.0)}  # 0.5 is the fastest; 0.625 ties with it within 3%
    assert ratios_within(curves, 1.0, times) == {1: GRID[4], 2: GRID[-1]}
    assert ratios_within(curves, 0.025, times) == {1: GRID[1], 2: 0.0}


def test_measured_curves_count_the_refit_that_will_repair_a_layer() -> None:
    """The first Conv reads inputs with 3 factors behind its 8 channels: pruned to 3 of them
    and refitted it is exact, masked it is not. Its curve is the error the pass will leave (the
    lesser of masked and refitted, the refit fitted on fit samples the error is not measured on),
    so the allowance does not spare a layer the refit repairs."""
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.layer.planner import PlanOptions
    from onnx_gkp.policy.curves import CURVE_SAMPLES, GRID, measured_curves

    model = make_model(CHAIN, CHAIN_WEIGHTS)
    sites = analyse(model).sites
    fit = _calibration(CURVE_SAMPLES + 32)
    masked = measured_curves(model, sites, PlanOptions(ratio=0.25), fit, threads=1, refit=False)
    curves = measured_curves(model, sites, PlanOptions(ratio=0.25), fit, threads=1)
    first = sites[0].node_index
    assert GRID[4] == 0.625 and masked[first][4] > 0.01  # 3 of 8 channels kept
    assert curves[first][4] < 1e-3 * masked[first][4]
    assert all(r <= m for node in curves for r, m in zip(curves[node], masked[node]))
